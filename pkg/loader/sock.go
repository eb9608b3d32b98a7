package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/podvnet/podvnet/pkg/maps"
)

// The socket hooks (maps.HookSock): cgroup v2 sock_addr programs, one
// bpf_link each on the pods' cgroup, pinned at <root>/links/sock/<program>
// so that they outlive the agent, updated in place on upgrade.

// sockProgram returns a socket hook's program and where it attaches.
func (d *Datapath) sockProgram(name string) (*ebpf.Program, ebpf.AttachType) {
	p := &d.progs
	hooks := map[string]struct {
		prog   *ebpf.Program
		attach ebpf.AttachType
	}{
		"sock_connect4":     {p.SockConnect4, ebpf.AttachCGroupInet4Connect},
		"sock_sendmsg4":     {p.SockSendmsg4, ebpf.AttachCGroupUDP4Sendmsg},
		"sock_recvmsg4":     {p.SockRecvmsg4, ebpf.AttachCGroupUDP4Recvmsg},
		"sock_getpeername4": {p.SockGetpeername4, ebpf.AttachCgroupInet4GetPeername},
		"sock_connect6":     {p.SockConnect6, ebpf.AttachCGroupInet6Connect},
		"sock_sendmsg6":     {p.SockSendmsg6, ebpf.AttachCGroupUDP6Sendmsg},
		"sock_recvmsg6":     {p.SockRecvmsg6, ebpf.AttachCGroupUDP6Recvmsg},
		"sock_getpeername6": {p.SockGetpeername6, ebpf.AttachCgroupInet6GetPeername},
	}
	h := hooks[name]
	return h.prog, h.attach
}

// CgroupID is the id of a cgroup v2 directory (its inode), as link info
// reports it.
func CgroupID(dir string) (uint64, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || !fi.IsDir() {
		return 0, fmt.Errorf("cgroup %s: not a directory", dir)
	}
	return st.Ino, nil
}

// AttachSock runs the socket programs for every process in the cgroup v2
// directory dir and below it. A pinned link on that cgroup is updated in
// place; one on another cgroup is replaced, the new link pinned over the old
// one before the old one is released, so that a cgroup both cover is never
// without the hooks.
func (d *Datapath) AttachSock(dir string) error {
	id, err := CgroupID(dir)
	if err != nil {
		return err
	}
	for _, name := range maps.SockPrograms {
		if err := d.attachSock(name, dir, id); err != nil {
			return err
		}
	}
	return nil
}

func (d *Datapath) attachSock(name, dir string, id uint64) error {
	prog, attach := d.sockProgram(name)
	pin := linkPin(d.root, maps.HookSock, name)
	if err := os.MkdirAll(filepath.Dir(pin), 0o700); err != nil {
		return fmt.Errorf("create link pin dir: %w", err)
	}
	old, err := link.LoadPinnedLink(pin, nil)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("open pinned link %s: %w", pin, err)
	default:
		defer old.Close()
		if info, err := old.Info(); err == nil && info.Cgroup() != nil && info.Cgroup().CgroupId == id {
			if err := old.Update(prog); err != nil {
				return fmt.Errorf("update pinned link %s: %w", pin, err)
			}
			return nil
		}
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: dir, Attach: attach, Program: prog})
	if err != nil {
		return fmt.Errorf("attach %s to cgroup %s: %w", name, dir, err)
	}
	defer l.Close()
	tmp := pin + "_replacing" // bpffs refuses names with a dot
	os.Remove(tmp)            // a crash between pin and rename left it
	if err := l.Pin(tmp); err != nil {
		return fmt.Errorf("pin link %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, pin); err != nil {
		l.Unpin()
		return fmt.Errorf("pin link %s: %w", pin, err)
	}
	return nil
}

// DetachSock removes the socket programs' links pinned under root; what is
// gone already is not an error.
func DetachSock(root string) error {
	var errs []error
	for _, name := range maps.SockPrograms {
		errs = append(errs, unpin(linkPin(root, maps.HookSock, name)))
	}
	return errors.Join(errs...)
}

// SockAttachment is one socket program's pinned link.
type SockAttachment struct {
	Program  string `json:"program"`
	CgroupID uint64 `json:"cgroup_id"`
	LinkID   uint32 `json:"link_id"`
	ProgID   uint32 `json:"prog_id"`
	Pin      string `json:"pin"`
}

// SockAttachments lists the socket programs' pinned links under root.
func SockAttachments(root string) ([]SockAttachment, error) {
	var out []SockAttachment
	for _, name := range maps.SockPrograms {
		pin := linkPin(root, maps.HookSock, name)
		l, err := link.LoadPinnedLink(pin, nil)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("open pinned link %s: %w", pin, err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			return nil, fmt.Errorf("link info %s: %w", pin, err)
		}
		a := SockAttachment{Program: name, LinkID: uint32(info.ID), ProgID: uint32(info.Program), Pin: pin}
		if cg := info.Cgroup(); cg != nil {
			a.CgroupID = cg.CgroupId
		}
		out = append(out, a)
	}
	return out, nil
}
