package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/spf13/cobra"

	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/pkg/node"
	"github.com/podvnet/podvnet/pkg/paths"
)

// monitorEvent is one event as `debug monitor -o json` prints it (one JSON
// object per line).
type monitorEvent struct {
	Time    string `json:"time"`
	Reason  string `json:"reason"`
	Verdict string `json:"verdict"`
	// Direction is a NetworkPolicy drop's: ingress (into the pod) or
	// egress (out of it).
	Direction string `json:"direction,omitempty"`
	Hook      string `json:"hook"`
	Ifindex   uint32 `json:"ifindex"`
	IfName    string `json:"ifname"`
	Proto     string `json:"proto"`
	Src       string `json:"src"`
	Dst       string `json:"dst"`
	// SrcPod and DstPod name the pod (namespace/name) of an address that
	// is an endpoint of this node.
	SrcPod string `json:"src_pod,omitempty"`
	DstPod string `json:"dst_pod,omitempty"`
	// Service names the Service (namespace/name:port/proto) of a
	// translation or of its failure.
	Service string `json:"service,omitempty"`
	Sport   uint16 `json:"sport,omitempty"`
	Dport   uint16 `json:"dport,omitempty"`
	Len     uint32 `json:"len"`
}

func newDebugMonitorCommand(p *paths.Node) *cobra.Command {
	var (
		output  string
		ipFlag  string
		reasons []string
		trace   bool
		count   int
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "monitor",
		Short: "Stream drop (and with --trace, every) verdict of the data path as it happens",
		Long: `monitor turns event reporting on in the running programs for as long as it
runs (a lease it renews; nobody listening costs one array lookup per packet)
and prints each event: reason, hook, interface, addresses, protocol, ports.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ip netip.Addr
			if ipFlag != "" {
				var err error
				if ip, err = netip.ParseAddr(ipFlag); err != nil || !ip.Is4() {
					return fmt.Errorf("--ip %q: not an IPv4 address", ipFlag)
				}
			}
			want := map[string]bool{}
			for _, r := range reasons {
				if !knownReason(r) {
					return fmt.Errorf("--reason %q: not a reason (see `debug counters`)", r)
				}
				want[r] = true
			}
			flags := maps.MonitorDrops
			if trace {
				flags |= maps.MonitorTrace
			}
			sess, err := maps.OpenMonitor(p.BPFFSRoot, flags, ip)
			if err != nil {
				return err
			}
			defer sess.Close()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if output == "table" {
				fmt.Fprintf(cmd.ErrOrStderr(), "monitoring %s (Ctrl-C to stop)\n", describeFilter(trace, ip, reasons))
			}
			var end time.Time
			if timeout > 0 {
				end = time.Now().Add(timeout)
			}
			wallOffset := time.Duration(time.Now().UnixNano()) - maps.Monotonic()
			pods := &podNames{state: *p}
			svcs := &serviceNamer{p: *p}
			seen := 0
			renew := time.Now().Add(maps.LeaseTTL / 3)
			for ctx.Err() == nil && (count == 0 || seen < count) {
				if !end.IsZero() && time.Now().After(end) {
					break
				}
				if time.Now().After(renew) {
					if err := sess.Renew(); err != nil {
						return err
					}
					renew = time.Now().Add(maps.LeaseTTL / 3)
				}
				ev, err := sess.Read(time.Now().Add(200 * time.Millisecond))
				if errors.Is(err, os.ErrDeadlineExceeded) {
					continue
				}
				if errors.Is(err, ringbuf.ErrClosed) {
					break
				}
				if err != nil {
					return err
				}
				if len(want) > 0 && !want[ev.Reason.String()] {
					continue
				}
				seen++
				me := toMonitorEvent(ev, wallOffset)
				me.SrcPod, me.DstPod = pods.name(me.Src), pods.name(me.Dst)
				if ev.Reason.IsService() {
					me.Service = svcs.name(ev)
				}
				if err := printEvent(cmd.OutOrStdout(), output, me); err != nil {
					return err
				}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&output, "output", "o", "table", "table (one line per event) or json (one object per line)")
	fl.StringVar(&ipFlag, "ip", "", "only packets from or to this IPv4 address (a pod IP)")
	fl.StringSliceVar(&reasons, "reason", nil, "only these reasons, e.g. drop_spoofed_ip")
	fl.BoolVar(&trace, "trace", false, "report every verdict, not only drops (costly on a busy node)")
	fl.IntVar(&count, "count", 0, "stop after this many events; 0 runs until Ctrl-C")
	fl.DurationVar(&timeout, "timeout", 0, "stop after this long; 0 runs until Ctrl-C")
	return cmd
}

func knownReason(name string) bool {
	for r := maps.Reason(0); r < maps.ReasonMax; r++ {
		if r.String() == name {
			return true
		}
	}
	return false
}

func describeFilter(trace bool, ip netip.Addr, reasons []string) string {
	what := "drops"
	if trace {
		what = "all verdicts"
	}
	if ip.IsValid() {
		what += " of " + ip.String()
	}
	if len(reasons) > 0 {
		what += " (" + strings.Join(reasons, ", ") + ")"
	}
	return what
}

var ipProtos = map[uint8]string{1: "icmp", 6: "tcp", 17: "udp", 132: "sctp"}

func toMonitorEvent(ev maps.Event, wallOffset time.Duration) monitorEvent {
	src, dst := ev.Addrs()
	sport, dport := ev.Ports()
	proto := ipProtos[ev.Proto]
	switch {
	case ev.EtherType() == 0x0806:
		proto = "arp"
	case ev.EtherType() != 0x0800:
		proto = fmt.Sprintf("ethertype-%#04x", ev.EtherType())
	case proto == "":
		proto = fmt.Sprintf("ip-proto-%d", ev.Proto)
	}
	return monitorEvent{
		Time:      time.Unix(0, int64(time.Duration(ev.TsNS)+wallOffset)).Format("15:04:05.000000"),
		Reason:    ev.Reason.String(),
		Verdict:   ev.Reason.Verdict(),
		Direction: ev.Reason.PolicyDirection(),
		Hook:      ev.Hook.Program(),
		Ifindex:   ev.Ifindex,
		IfName:    eventIfName(ev),
		Proto:     proto,
		Src:       src.String(),
		Dst:       dst.String(),
		Sport:     sport,
		Dport:     dport,
		Len:       ev.Len,
	}
}

func printEvent(w io.Writer, output string, e monitorEvent) error {
	switch output {
	case "json":
		return json.NewEncoder(w).Encode(e)
	case "table":
		src, dst := e.Src, e.Dst
		if e.Sport != 0 || e.Dport != 0 {
			src, dst = fmt.Sprintf("%s:%d", src, e.Sport), fmt.Sprintf("%s:%d", dst, e.Dport)
		}
		if e.SrcPod != "" {
			src += "[" + e.SrcPod + "]"
		}
		if e.DstPod != "" {
			dst += "[" + e.DstPod + "]"
		}
		service := ""
		if e.Service != "" {
			service = " service=" + e.Service
		}
		_, err := fmt.Fprintf(w, "%s %-20s %-8s %s(%d) %s -> %s %s %dB%s\n",
			e.Time, e.Reason, e.Hook, e.IfName, e.Ifindex, src, dst, e.Proto, e.Len, service)
		return err
	default:
		return fmt.Errorf("-o %q: want table or json", output)
	}
}

// podNames names the pods of this node's endpoints from the state file,
// read again when it changed (at most once a second): pods come and go
// while a monitor runs.
type podNames struct {
	state   paths.Node
	byIP    map[string]string
	modTime time.Time
	checked time.Time
}

// name is the pod (namespace/name) holding ip, or "".
func (n *podNames) name(ip string) string {
	if time.Since(n.checked) > time.Second {
		n.checked = time.Now()
		if fi, err := os.Stat(n.state.StateFile()); err == nil && !fi.ModTime().Equal(n.modTime) {
			if st, err := node.ReadState(n.state); err == nil {
				n.modTime, n.byIP = fi.ModTime(), map[string]string{}
				for _, al := range st.Allocations {
					if al.PodName != "" {
						n.byIP[al.IP.String()] = al.PodNamespace + "/" + al.PodName
					}
				}
			}
		}
	}
	return n.byIP[ip]
}

// eventIfName names the interface of a packet's event; a socket call's has
// none.
func eventIfName(ev maps.Event) string {
	if ev.Hook == maps.HookSock {
		return "-"
	}
	return ifName(ev.Ifindex)
}
