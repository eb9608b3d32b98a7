// Package nettest gives privileged tests their own network namespaces,
// veths and bpffs mounts, each removed when the test ends, also when it fails.
package nettest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RequireRoot skips a privileged test without root, except in CI
// (CI=true), where a privileged test that cannot run must fail.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("privileged test needs root, and CI=true forbids skipping it")
	}
	t.Skip("privileged test: run as root")
}

// RequireTool skips a test whose tool is not installed, except in CI,
// where .ci/run installs it and its absence must fail the run.
func RequireTool(t testing.TB, name, why string) {
	t.Helper()
	if _, err := exec.LookPath(name); err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is needed %s, and CI=true forbids skipping", name, why)
	}
	t.Skipf("%s not installed", name)
}

// Prefix returns a short name prefix unique to this test run, used for every
// namespace and pin the test creates.
func Prefix() string {
	b := make([]byte, 3)
	rand.Read(b)
	return "pvt" + hex.EncodeToString(b)
}

// BPFFS mounts a private bpffs on a temporary directory and unmounts it when
// the test ends; whatever was pinned there goes with it.
func BPFFS(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpffs", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs at %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// NS is a named network namespace (under /run/netns) owned by a test.
type NS struct {
	Name   string
	Handle netns.NsHandle
	NL     *netlink.Handle
}

// Path is the namespace's bind-mount path, for nsenter and CNI_NETNS.
func (n *NS) Path() string { return "/run/netns/" + n.Name }

// NewNS creates a named namespace with loopback up and removes it when the
// test ends.
func NewNS(t testing.TB, name string) *NS {
	t.Helper()
	n, err := CreateNS(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Delete() })
	return n
}

// CreateNS creates a named namespace with loopback up. The caller deletes it.
func CreateNS(name string) (*NS, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	h, err := netns.NewNamed(name)
	// NewNamed switched this thread into the new namespace: switch back.
	if serr := netns.Set(orig); serr != nil {
		panic(fmt.Sprintf("cannot return to the original netns: %v", serr))
	}
	if err != nil {
		return nil, fmt.Errorf("create netns %s: %w", name, err)
	}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		h.Close()
		netns.DeleteNamed(name)
		return nil, fmt.Errorf("netlink handle in %s: %w", name, err)
	}
	n := &NS{Name: name, Handle: h, NL: nl}
	lo, err := nl.LinkByName("lo")
	if err == nil {
		err = nl.LinkSetUp(lo)
	}
	if err != nil {
		n.Delete()
		return nil, fmt.Errorf("bring up lo in %s: %w", name, err)
	}
	return n, nil
}

// Delete removes the namespace; links inside it go with it.
func (n *NS) Delete() error {
	n.NL.Close()
	n.Handle.Close()
	return netns.DeleteNamed(n.Name)
}

// Do runs f with the calling goroutine's thread inside the namespace.
// Sockets created in f stay in the namespace after f returns.
func (n *NS) Do(f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(n.Handle); err != nil {
		return fmt.Errorf("enter netns %s: %w", n.Name, err)
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		panic(fmt.Sprintf("cannot return to the original netns: %v", err))
	}
	return ferr
}

// Sysctl writes a per-namespace sysctl (e.g. "net/ipv4/ip_forward") inside n.
// /proc/sys/net follows the writing thread's network namespace.
func (n *NS) Sysctl(key, value string) error {
	return n.Do(func() error {
		if _, err := sysctl.Sysctl(key, value); err != nil {
			return fmt.Errorf("sysctl %s=%s in %s: %w", key, value, n.Name, err)
		}
		return nil
	})
}

// DeleteNamespaces removes the named namespaces starting with prefix: what a
// run killed before its cleanup left (a SIGKILLed test binary cannot clean
// up after itself).
func DeleteNamespaces(prefix string) {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			netns.DeleteNamed(e.Name())
		}
	}
}
