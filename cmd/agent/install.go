package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/podvnet/podvnet/pkg/agent"
	"github.com/podvnet/podvnet/pkg/install"
)

// cniFlags are the flags of `run` that install the CNI plugin on the node
// (the DaemonSet sets them; tests and the demo leave --cni-conf-dir empty).
type cniFlags struct {
	confDir, confName, binDir, plugin, conflist, version string
	flags                                                *pflag.FlagSet
}

func (c *cniFlags) register(fl *pflag.FlagSet) {
	c.flags = fl
	fl.StringVar(&c.confDir, "cni-conf-dir", "", "the runtime's CNI config dir: once the agent is ready, the plugin and its conflist are installed there; empty installs nothing")
	fl.StringVar(&c.confName, "cni-conf-name", install.DefaultConfName, "file name of the conflist in --cni-conf-dir (runtimes use the first in lexical order)")
	fl.StringVar(&c.binDir, "cni-bin-dir", "/opt/cni/bin", "the runtime's CNI plugin dir the plugin binary is copied into (with --cni-conf-dir)")
	fl.StringVar(&c.plugin, "plugin-binary", "/opt/podvnet/bin/podvnet", "the CNI plugin binary to copy (its path in the image)")
	fl.StringVar(&c.conflist, "cni-conflist", "", "the conflist to install (the DaemonSet's ConfigMap); empty: podvnet alone, with --cni-version and --socket")
	fl.StringVar(&c.version, "cni-version", install.DefaultCNIVersion, "cniVersion of the generated conflist (containerd 1.6 refuses results of 1.1.0)")
}

// installer returns what to install, nil when --cni-conf-dir is empty. The
// conflist is checked here so that a wrong one stops the agent at start,
// not once it is ready.
func (c *cniFlags) installer(socket string) (*install.Config, error) {
	if c.confDir == "" {
		return nil, nil
	}
	if err := install.CheckConfName(c.confName); err != nil {
		return nil, fmt.Errorf("--cni-conf-name: %w", err)
	}
	conflist, source := install.DefaultConflist(c.version, socket), "generated conflist"
	if c.conflist != "" {
		if c.flags.Changed("cni-version") {
			return nil, errors.New("--cni-version applies to the generated conflist: set cniVersion in --cni-conflist instead")
		}
		b, err := os.ReadFile(c.conflist)
		if err != nil {
			return nil, fmt.Errorf("--cni-conflist: %w", err)
		}
		conflist, source = b, "--cni-conflist "+c.conflist
	}
	if err := install.Check(conflist, socket); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	if _, err := os.Stat(c.plugin); err != nil {
		return nil, fmt.Errorf("--plugin-binary: %w", err)
	}
	return &install.Config{BinDir: c.binDir, ConfDir: c.confDir, ConfName: c.confName, Plugin: c.plugin, Conflist: conflist}, nil
}

// installWhenReady installs the plugin once the agent first serves, so the
// runtime never finds a network config before a pod could be served.
func installWhenReady(ctx context.Context, cfg *install.Config, ready *agent.Readiness, log *zap.Logger) error {
	select {
	case <-ctx.Done():
		return nil
	case <-ready.FirstReady():
	}
	res, err := cfg.Install(ctx)
	if err != nil {
		return fmt.Errorf("install CNI plugin: %w", err)
	}
	log.Info("CNI plugin installed", zap.String("conflist", filepath.Join(cfg.ConfDir, cfg.ConfName)),
		zap.Bool("conflist_changed", res.ConflistChanged), zap.String("plugin", filepath.Join(cfg.BinDir, install.PluginType)),
		zap.Bool("plugin_changed", res.PluginChanged))
	if res.LoopbackMissing {
		log.Warn("no loopback plugin in the CNI bin dir: the runtime needs it for every pod; install the reference CNI plugins",
			zap.String("bin_dir", cfg.BinDir))
	}
	return nil
}
