package main

import (
	"github.com/spf13/cobra"

	"github.com/podvnet/podvnet/pkg/agent"
	"github.com/podvnet/podvnet/pkg/install"
	"github.com/podvnet/podvnet/pkg/paths"
)

func newCleanupCommand() *cobra.Command {
	var (
		cfg      agent.CleanupConfig
		logLevel string
	)
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Uninstall from this node: remove every program, link, pin, pod veth and route podvnet made",
		Long: `cleanup removes everything podvnet made on this node: the CNI conflist
(with --cni-conf-dir; the plugin binary stays so that the runtime can still
delete pods), tc programs (tcx links and legacy filters), pinned maps and
links, the host veths of pods with their /32 routes, the API socket and the
allocation state. Pods on the node lose their network. The agent must be
stopped first. Upgrades never need this: a new agent adopts the running
data path.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel, "console")
			if err != nil {
				return err
			}
			defer log.Sync()
			return agent.Cleanup(cmd.Context(), cfg, log)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfg.Paths.BPFFSRoot, "bpffs-root", paths.DefaultBPFFSRoot, "bpffs directory the agent pins under")
	fl.StringVar(&cfg.Paths.StateDir, "state-dir", paths.DefaultStateDir, "the agent's state directory")
	fl.StringVar(&cfg.Paths.Socket, "socket", paths.DefaultSocket, "the agent's API socket")
	fl.StringVar(&cfg.CNIConfDir, "cni-conf-dir", "", "the runtime's CNI config dir the agent installed into; empty leaves CNI config alone")
	fl.StringVar(&cfg.CNIConfName, "cni-conf-name", install.DefaultConfName, "file name of the installed conflist")
	fl.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}
