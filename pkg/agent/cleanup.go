package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"

	"github.com/podvnet/podvnet/pkg/agentapi"
	"github.com/podvnet/podvnet/pkg/install"
	"github.com/podvnet/podvnet/pkg/loader"
	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/pkg/snat"
)

// CleanupConfig names what `podvnet-agent cleanup` removes.
type CleanupConfig struct {
	BPFFSRoot string
	StateDir  string
	Socket    string
	// CNIConfDir and CNIConfName locate the installed conflist; an empty
	// dir leaves CNI config alone.
	CNIConfDir  string
	CNIConfName string
}

// ErrAgentRunning means cleanup was refused because an agent still serves.
var ErrAgentRunning = errors.New("a podvnet agent is still running")

// Cleanup removes everything podvnet made on this node: the CNI conflist,
// programs (tcx links and legacy tc filters), pinned maps and the pin
// directories, the masquerade table, the host veths of pods (their /32
// routes go with them), the socket and the state. Sysctls are left as they are (ip_forward=1 is
// what any Kubernetes node needs).
// Pods on the node lose their network: this is the uninstall path, not the
// upgrade path (an upgrade keeps all of it running).
func Cleanup(ctx context.Context, cfg CleanupConfig, log *zap.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if st, err := agentapi.NewClient(cfg.Socket).Status(ctx); err == nil {
		return fmt.Errorf("%w at %s (ready=%v): stop it first, or it re-creates what cleanup removes", ErrAgentRunning, cfg.Socket, st.Ready)
	}

	var errs []error
	// The conflist goes first: the runtime stops handing new pods to a
	// network that is being torn down. The plugin binary stays for DELs.
	if cfg.CNIConfDir != "" {
		if err := install.Uninstall(cfg.CNIConfDir, cfg.CNIConfName); err != nil {
			errs = append(errs, err)
		} else {
			log.Info("removed CNI config", zap.String("conflist", filepath.Join(cfg.CNIConfDir, cfg.CNIConfName)))
		}
	}
	atts, err := loader.ListAttachments(cfg.BPFFSRoot)
	if err != nil {
		errs = append(errs, err)
	}
	for _, a := range atts {
		if err := loader.Detach(cfg.BPFFSRoot, a.Hook, a.IfName); err != nil {
			errs = append(errs, err)
			continue
		}
		log.Info("detached", zap.String("ifname", a.IfName), zap.String("prog", a.ProgName), zap.String("mode", string(a.Mode)))
	}

	if err := snat.Remove(); err != nil {
		errs = append(errs, err)
	} else {
		log.Info("removed nftables table", zap.String("table", snat.TableName))
	}

	links, err := netlinksafe.LinkList()
	if err != nil {
		errs = append(errs, fmt.Errorf("list links: %w", err))
	}
	for _, l := range links {
		if hostVethName.MatchString(l.Attrs().Name) && l.Type() == "veth" {
			if err := netlink.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("delete veth %s: %w", l.Attrs().Name, err))
				continue
			}
			log.Info("deleted pod veth", zap.String("ifname", l.Attrs().Name))
		}
	}

	for _, name := range maps.Names {
		if err := removeIfExists(filepath.Join(maps.PinDir(cfg.BPFFSRoot), name)); err != nil {
			errs = append(errs, err)
		}
	}
	for _, dir := range []string{
		loader.LinkPinDir(cfg.BPFFSRoot, maps.HookPod),
		loader.LinkPinDir(cfg.BPFFSRoot, maps.HookNIC),
		loader.LinksDir(cfg.BPFFSRoot),
		maps.PinDir(cfg.BPFFSRoot),
	} {
		if err := removeIfExists(dir); err != nil {
			errs = append(errs, err)
		}
	}
	// The root itself may be a bpffs mount point (then it stays, empty).
	if err := os.Remove(cfg.BPFFSRoot); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, os.ErrPermission) {
		log.Debug("bpffs root kept", zap.String("path", cfg.BPFFSRoot), zap.Error(err))
	}
	for _, f := range []string{cfg.Socket, StateFile(cfg.StateDir)} {
		if err := removeIfExists(f); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	log.Info("cleanup done: nothing of podvnet is left on this node")
	return nil
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}
