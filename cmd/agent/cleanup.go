package main

import (
	"path/filepath"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/podvnet/podvnet/pkg/install"
	"github.com/podvnet/podvnet/pkg/node"
	"github.com/podvnet/podvnet/pkg/paths"
)

func newCleanupCommand() *cobra.Command {
	var (
		p                 paths.Node
		confDir, confName string
		logLevel          string
	)
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Uninstall from this node: remove every program, link, pin, pod veth, route and file podvnet made",
		Long: `cleanup removes everything podvnet made on this node: the CNI conflist
(with --cni-conf-dir; the plugin binary stays so that the runtime can still
delete pods), tc programs (tcx links and legacy filters), pinned maps and
links, the host veths of pods with their /32 routes, the API socket and the
state directory (allocations, settings, queued releases). Pods on the node
lose their network. The agent must be stopped first. Upgrades never need
this: a new agent adopts the running data path.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel, "console")
			if err != nil {
				return err
			}
			defer log.Sync()
			var removeCNIConfig func() error
			if confDir != "" {
				removeCNIConfig = func() error {
					if err := install.Uninstall(confDir, confName); err != nil {
						return err
					}
					log.Info("removed CNI config", zap.String("conflist", filepath.Join(confDir, confName)))
					return nil
				}
			}
			return node.Cleanup(cmd.Context(), p, removeCNIConfig, log)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&p.BPFFSRoot, "bpffs-root", paths.DefaultBPFFSRoot, "bpffs directory the agent pins under")
	fl.StringVar(&p.StateDir, "state-dir", paths.DefaultStateDir, "the agent's state directory")
	fl.StringVar(&p.Socket, "socket", paths.DefaultSocket, "the agent's API socket")
	fl.StringVar(&confDir, "cni-conf-dir", "", "the runtime's CNI config dir the agent installed into; empty leaves CNI config alone")
	fl.StringVar(&confName, "cni-conf-name", install.DefaultConfName, "file name of the installed conflist")
	fl.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}
