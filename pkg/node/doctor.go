package node

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podvnet/podvnet/internal/netlinkdump"
	"github.com/podvnet/podvnet/internal/podroute"
	"github.com/podvnet/podvnet/pkg/agentapi"
	"github.com/podvnet/podvnet/pkg/ipam"
	"github.com/podvnet/podvnet/pkg/loader"
	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/pkg/paths"
	"github.com/podvnet/podvnet/pkg/snat"
)

// Finding is one thing `debug doctor` checked.
type Finding struct {
	Check  string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// Doctor checks the node the way an engineer would, read-only, and names
// each problem with its fix. It runs in the node's network namespace.
func Doctor(ctx context.Context, n paths.Node) []Finding {
	var out []Finding
	ok := func(check, detail string) { out = append(out, Finding{Check: check, OK: true, Detail: detail}) }
	bad := func(check, detail, fix string) {
		out = append(out, Finding{Check: check, Detail: detail, Fix: fix})
	}

	if isBPF, err := loader.IsBPFFS(n.BPFFSRoot); err != nil || !isBPF {
		bad("bpffs", fmt.Sprintf("%s is not on a bpf filesystem", n.BPFFSRoot),
			"mount -t bpf bpffs /sys/fs/bpf (the agent does it on start; the DaemonSet must mount the host's /sys/fs/bpf)")
	} else {
		ok("bpffs", n.BPFFSRoot+" is on bpffs")
	}

	var uts unix.Utsname
	unix.Uname(&uts)
	release := unix.ByteSliceToString(uts.Release[:])
	if kernelAtLeast(release, 6, 6) {
		ok("kernel", "Linux "+release+" has tcx")
	} else {
		ok("kernel", "Linux "+release+" has no tcx: programs attach with legacy tc (clsact + cls_bpf), which works; upgrade for atomic link updates")
	}

	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	st, err := agentapi.NewClient(n.Socket).Status(actx)
	cancel()
	switch {
	case err != nil:
		bad("agent", fmt.Sprintf("no agent answers at %s: existing pods keep working, new pods cannot start", n.Socket),
			"check the podvnet DaemonSet pod on this node (kubectl -n kube-system logs ds/podvnet)")
	case !st.Ready:
		bad("agent", "agent not ready: "+st.Reason, "see the agent's log")
	default:
		ok("agent", fmt.Sprintf("ready, %d of %d pod addresses in use, %d free", st.Allocated, st.Limit, st.Free))
	}

	if v, err := sysctl.Sysctl("net/ipv4/ip_forward"); err == nil && v != "1" {
		bad("ip_forward", "net.ipv4.ip_forward is 0: Services, Internet egress and node-to-pod fallbacks cannot be forwarded",
			"sysctl -w net.ipv4.ip_forward=1 (the agent sets it on start)")
	} else {
		ok("ip_forward", "net.ipv4.ip_forward=1")
	}
	if present, err := snat.Present(); err != nil || !present {
		bad("masquerade", "nftables table ip "+snat.TableName+" is missing: pods cannot reach the Internet",
			"restart the agent: it writes the table on start")
	} else {
		ok("masquerade", "nftables table ip "+snat.TableName+" present")
	}

	set, err := maps.OpenPinned(n.BPFFSRoot)
	if err != nil {
		bad("maps", err.Error(), "start the agent: it creates and pins the maps")
		return out
	}
	defer set.Close()
	ok("maps", "pinned under "+n.MapsDir())

	atts, err := loader.ListAttachments(n.BPFFSRoot)
	if err != nil {
		bad("programs", err.Error(), "")
		return out
	}
	attached := map[string]loader.Attachment{}
	nicOK := false
	for _, a := range atts {
		attached[a.Hook.String()+"/"+a.IfName] = a
		if a.Hook == maps.HookNIC && !a.Defunct {
			nicOK = true
			ok("nic program", fmt.Sprintf("from_nic on %s (%s)", a.IfName, a.Mode))
		}
	}
	if !nicOK {
		bad("nic program", "from_nic runs on no interface: traffic from the VNet to pods takes the slow kernel path",
			"restart the agent")
	}

	entries, err := set.Endpoints.List()
	if err != nil {
		bad("endpoints", err.Error(), "")
		return out
	}
	links, err := netlinkdump.Links()
	if err != nil {
		bad("interfaces", err.Error(), "")
		return out
	}
	byIndex := map[int]netlink.Link{}
	for _, l := range links {
		byIndex[l.Attrs().Index] = l
	}
	var state *ipam.State
	if state, err = ReadState(n); err != nil {
		bad("state", err.Error(), "see docs/operations.md before touching the state file")
	}
	allocated := map[netip.Addr]ipam.Allocation{}
	if state != nil {
		for _, al := range state.Allocations {
			allocated[al.IP] = al
		}
	}

	endpointOf := map[int]netip.Addr{}
	problems := 0
	for _, e := range entries {
		endpointOf[int(e.Ifindex)] = e.IP
		check := "endpoint " + e.IP.String()
		l, exists := byIndex[int(e.Ifindex)]
		if !exists {
			bad(check, fmt.Sprintf("its veth (ifindex %d) is gone: packets to this IP are dropped", e.Ifindex),
				"restart the agent: reconcile releases the address and removes the entry")
			problems++
			continue
		}
		name := l.Attrs().Name
		if podroute.Check(e.IP, l) != nil {
			bad(check, fmt.Sprintf("no route %s/32 dev %s: the node and NAT'd replies cannot reach the pod", e.IP, name),
				fmt.Sprintf("ip route replace %s/32 dev %s (the agent restores it on restart)", e.IP, name))
			problems++
		}
		if a, ok := attached[maps.HookPod.String()+"/"+name]; !ok || a.Defunct {
			bad(check, fmt.Sprintf("from_pod is not attached to %s: the pod's traffic bypasses anti-spoofing and the fast path", name),
				"restart the agent: reconcile attaches it")
			problems++
		}
		if state != nil {
			if _, ok := allocated[e.IP]; !ok {
				bad(check, "in the endpoints map but not allocated in the state file: the address could be handed to a second pod",
					"restart the agent: reconcile removes entries without an allocation")
				problems++
			}
		}
	}
	for _, l := range links {
		name := l.Attrs().Name
		if !agentapi.IsHostVethName(name) || l.Type() != "veth" {
			continue
		}
		if _, ok := endpointOf[l.Attrs().Index]; !ok {
			bad("veth "+name, "a pod veth with no endpoint: its pod has no working network",
				"ip link del "+name+" (or restart the agent), then restart the pod")
			problems++
		}
	}
	if state != nil {
		inMap := map[netip.Addr]bool{}
		for _, e := range entries {
			inMap[e.IP] = true
		}
		for ip, al := range allocated {
			if !inMap[ip] {
				bad("allocation "+ip.String(), fmt.Sprintf("allocated to %s/%s (container %s) but not in the endpoints map",
					al.PodNamespace, al.PodName, shortID(al.ContainerID)),
					"restart the agent: reconcile restores the entry, or releases the address if the veth is gone")
				problems++
			}
		}
	}
	if problems == 0 {
		ok("endpoints", fmt.Sprintf("%d endpoints, each with its veth, route, program and allocation", len(entries)))
	}
	return out
}

func kernelAtLeast(release string, major, minor int) bool {
	var ma, mi int
	fmt.Sscanf(release, "%d.%d", &ma, &mi)
	return ma > major || (ma == major && mi >= minor)
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
