package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/podvnet/podvnet/internal/atomicfile"
	"github.com/podvnet/podvnet/internal/netlinkdump"
	"github.com/podvnet/podvnet/internal/svcdev"
	"github.com/podvnet/podvnet/pkg/agentapi"
	"github.com/podvnet/podvnet/pkg/loader"
	"github.com/podvnet/podvnet/pkg/paths"
	"github.com/podvnet/podvnet/pkg/snat"
)

// ErrAgentRunning means cleanup was refused because an agent still serves.
var ErrAgentRunning = errors.New("a podvnet agent is still running")

// Cleanup removes everything podvnet made on this node: programs (tcx
// links and legacy tc filters; the socket hooks' links go with the pins),
// the Service device, the masquerade table, the host veths of
// pods (their /32 routes go with them), the pinned maps and pin
// directories, the socket and the whole state dir (allocations, settings,
// DEL queue). removeCNIConfig, when not nil, runs first, once no agent
// answers: the runtime must stop handing pods to a network that is being
// torn down. Sysctls are left as they are (ip_forward=1 is what any
// Kubernetes node needs). Pods on the node lose their network: this is
// the uninstall path, not the upgrade path (an upgrade keeps all of it
// running).
func Cleanup(ctx context.Context, n paths.Node, removeCNIConfig func() error, log *zap.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if st, err := agentapi.NewClient(n.Socket).Status(ctx); err == nil {
		return fmt.Errorf("%w at %s (ready=%v): stop it first, or it re-creates what cleanup removes", ErrAgentRunning, n.Socket, st.Ready)
	}

	var errs []error
	if removeCNIConfig != nil {
		errs = append(errs, removeCNIConfig())
	}
	atts, err := loader.ListAttachments(n.BPFFSRoot)
	errs = append(errs, err)
	for _, a := range atts {
		if err := loader.Detach(n.BPFFSRoot, a.Hook, a.IfName); err != nil {
			errs = append(errs, err)
			continue
		}
		log.Info("detached", zap.String("ifname", a.IfName), zap.String("prog", a.ProgName), zap.String("mode", string(a.Mode)))
	}

	if err := svcdev.Remove(); err != nil {
		errs = append(errs, err)
	}

	if err := snat.Remove(); err != nil {
		errs = append(errs, err)
	} else {
		log.Info("removed nftables table", zap.String("table", snat.TableName))
	}

	links, err := netlinkdump.Links()
	errs = append(errs, err)
	for _, l := range links {
		if agentapi.IsHostVethName(l.Attrs().Name) && l.Type() == "veth" {
			if err := netlink.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("delete veth %s: %w", l.Attrs().Name, err))
				continue
			}
			log.Info("deleted pod veth", zap.String("ifname", l.Attrs().Name))
		}
	}

	errs = append(errs, removeBPFFSRoot(n, log), removeState(n, log))
	if err := errors.Join(errs...); err != nil {
		return err
	}
	log.Info("cleanup done: nothing of podvnet is left on this node")
	return nil
}

// removeBPFFSRoot removes the pins (the programs are detached by now) and
// the directories that held them.
func removeBPFFSRoot(n paths.Node, log *zap.Logger) error {
	var errs []error
	for _, dir := range []string{n.MapsDir(), n.LinksDir()} {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("remove pins: %w", err))
		}
	}
	errs = append(errs, removeDir(n.BPFFSRoot, log))
	return errors.Join(errs...)
}

// removeState removes the socket and every file the agent and the plugin
// write under the state dir, including DEL queue entries and what an
// interrupted atomic write left, and then the state dir itself.
func removeState(n paths.Node, log *zap.Logger) error {
	var errs []error
	for _, f := range append([]string{n.Socket}, n.StateFiles()...) {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", f, err))
		}
	}
	for _, f := range n.StateFiles() {
		tmps, _ := filepath.Glob(filepath.Join(filepath.Dir(f), atomicfile.TempPattern(filepath.Base(f))))
		for _, tmp := range tmps {
			if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove %s: %w", tmp, err))
			}
		}
	}
	if err := os.RemoveAll(n.DelQueueDir()); err != nil {
		errs = append(errs, fmt.Errorf("remove DEL queue: %w", err))
	}
	errs = append(errs, removeDir(n.StateDir, log))
	return errors.Join(errs...)
}

// removeDir removes a directory podvnet uses once it is empty. One that is
// a mount point (the DaemonSet mounts the state dir and the bpffs root)
// stays, empty; one that holds files podvnet did not write stays with them.
func removeDir(dir string, log *zap.Logger) error {
	err := os.Remove(dir)
	switch {
	case err == nil, errors.Is(err, fs.ErrNotExist):
		return nil
	case errors.Is(err, unix.EBUSY), errors.Is(err, unix.EPERM):
		log.Debug("directory kept: a mount point", zap.String("path", dir), zap.Error(err))
		return nil
	case errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST):
		left, _ := os.ReadDir(dir)
		names := make([]string, 0, len(left))
		for _, e := range left {
			names = append(names, e.Name())
		}
		log.Warn("directory kept: it holds files podvnet did not write", zap.String("path", dir), zap.Strings("files", names))
		return nil
	default:
		return fmt.Errorf("remove %s: %w", dir, err)
	}
}
