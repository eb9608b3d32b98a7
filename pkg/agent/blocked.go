package agent

import (
	"fmt"
	"net/netip"

	"go.uber.org/zap"

	"github.com/podvnet/podvnet/pkg/platform"
)

// wireserverPrefix is always a no-SNAT destination. Azure's load balancer
// probes pods from 168.63.129.16, and the pod's answer would otherwise go to
// the stack and be masqueraded (the handshake's SYN-ACK slips through as
// untracked, the data after it does not), so the probe would see the node
// answer a connection it never opened. Azure CNI's masquerade rule excludes
// it too (`-m iprange ! --dst-range 168.63.129.16`): pods reach the
// platform's DNS with their own IP.
var wireserverPrefix = netip.PrefixFrom(platform.WireserverIP, 32)

// syncBlocked makes the data path's blocked map hold exactly the configured
// destinations, in place: from_pod reads it on every packet, so a changed
// list needs no new program. prepareNode put the same list in the nftables
// rule for the kernel path.
func (a *Agent) syncBlocked() error {
	if err := a.dp.Maps.Blocked.Sync(platform.Entries(a.cfg.Blocked)); err != nil {
		return fmt.Errorf("blocked destinations: %w", err)
	}
	a.log.Info("blocked destinations in place", zap.String("blocked", platform.Format(a.cfg.Blocked)))
	return nil
}
