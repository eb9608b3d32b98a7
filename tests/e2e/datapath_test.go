package e2e

import (
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/pkg/agentapi"
	"github.com/podvnet/podvnet/pkg/loader"
	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// attachments lists what podvnet runs on a node, keyed "hook/ifname".
func attachments(t *testing.T, n *vnet.Node) map[string]loader.Attachment {
	t.Helper()
	var atts []loader.Attachment
	err := n.NS.Do(func() (err error) {
		atts, err = loader.ListAttachments(n.BPFFS)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]loader.Attachment{}
	for _, a := range atts {
		k := a.Hook.String() + "/" + a.IfName
		if _, dup := m[k]; dup {
			t.Fatalf("%s: two programs on %s: %+v", n.Name, k, atts)
		}
		m[k] = a
	}
	return m
}

func counters(t *testing.T, n *vnet.Node) map[maps.Reason]maps.Counter {
	t.Helper()
	m, err := n.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestAgentKillDropsNothing floods UDP between pods on two nodes while both
// agents are SIGKILLed and restarted: the pinned data path keeps forwarding
// (no datagram lost), the new agents replace the programs in place (same
// links, new programs), and no map entry or counter is lost.
func TestAgentKillDropsNothing(t *testing.T) {
	v := newVNet(t, vnet.Options{PerNode: 4})
	startAgents(t, v)
	n1, n2 := v.Nodes[0], v.Nodes[1]
	a := addPod(t, n1, "a")
	c := addPod(t, n2, "c")

	before := map[string]map[string]loader.Attachment{}
	endpointsBefore := map[string]string{}
	for _, n := range v.Nodes {
		before[n.Name] = attachments(t, n)
		out, err := n.Debug("endpoints", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		endpointsBefore[n.Name] = out
	}

	var ctrBefore map[maps.Reason]maps.Counter
	floodDuring(t, a, c, "across the agent restarts", func() {
		ctrBefore = counters(t, n1)
		for _, n := range v.Nodes {
			n.StopAgent(syscall.SIGKILL)
			time.Sleep(200 * time.Millisecond) // forwarding with no agent at all
			if err := n.StartAgent(); err != nil {
				t.Fatal(err)
			}
		}
	})

	for _, n := range v.Nodes {
		after := attachments(t, n)
		if len(after) != len(before[n.Name]) {
			t.Errorf("%s: attachments %v before, %v after", n.Name, before[n.Name], after)
		}
		for k, b := range before[n.Name] {
			a, ok := after[k]
			switch {
			case !ok:
				t.Errorf("%s: %s gone after restart", n.Name, k)
			case a.LinkID != b.LinkID:
				t.Errorf("%s: %s link %d replaced by %d: detached and re-attached instead of updated", n.Name, k, b.LinkID, a.LinkID)
			case a.ProgID == b.ProgID:
				t.Errorf("%s: %s still runs program %d: the new agent did not replace it", n.Name, k, a.ProgID)
			}
		}
		out, err := n.Debug("endpoints", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		if out != endpointsBefore[n.Name] {
			t.Errorf("%s: endpoints changed across the restart:\nbefore %s\nafter  %s", n.Name, endpointsBefore[n.Name], out)
		}
	}
	ctrAfter := counters(t, n1)
	for _, r := range []maps.Reason{maps.ReasonPodToNIC, maps.ReasonNICToLocal} {
		if ctrAfter[r].Packets <= ctrBefore[r].Packets {
			t.Errorf("node1 counter %s went from %d to %d: counters must continue across restarts", r, ctrBefore[r].Packets, ctrAfter[r].Packets)
		}
	}
}

// TestSpoofedSourceIsDropped: a pod that sends with another pod's IP (or a
// forged MAC) reaches nothing, and the drop counters say why.
func TestSpoofedSourceIsDropped(t *testing.T) {
	v := newVNet(t, vnet.Options{PerNode: 4})
	startAgents(t, v)
	n1, n2 := v.Nodes[0], v.Nodes[1]
	a := addPod(t, n1, "a")
	b := addPod(t, n1, "b") // whose IP a forges
	d := addPod(t, n1, "d")
	c := addPod(t, n2, "c")

	// Targets: a pod on another node, a pod on the same node, the node.
	listen := func(ns vnet.Netns, port int) net.PacketConn {
		var pc net.PacketConn
		if err := ns.Do(func() (err error) { pc, err = net.ListenPacket("udp4", ":"+strconv.Itoa(port)); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		return pc
	}
	targets := map[string]struct {
		pc   net.PacketConn
		addr netip.Addr
	}{
		"remote pod": {listen(c.NS, 9100), c.IP},
		"local pod":  {listen(d.NS, 9100), d.IP},
		"node":       {listen(n1.NS, 9100), n1.Pool.Primary},
	}

	// a claims b's address as its own and sends from it.
	link, err := a.NS.NL.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	forged := &netlink.Addr{IPNet: &net.IPNet{IP: b.IP.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := a.NS.NL.AddrAdd(link, forged); err != nil {
		t.Fatal(err)
	}
	send := func(src netip.Addr) {
		t.Helper()
		for _, tg := range targets {
			err := a.NS.Do(func() error {
				conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: src.AsSlice()}, &net.UDPAddr{IP: tg.addr.AsSlice(), Port: 9100})
				if err != nil {
					return err
				}
				defer conn.Close()
				for range 20 {
					conn.Write([]byte("spoofed"))
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	// received drains a target and reports whether anything had arrived.
	received := func(tg net.PacketConn) bool {
		got := false
		buf := make([]byte, 64)
		for {
			tg.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if _, _, err := tg.ReadFrom(buf); err != nil {
				return got
			}
			got = true
		}
	}

	before := counters(t, n1)
	send(b.IP)
	for name, tg := range targets {
		if received(tg.pc) {
			t.Errorf("a datagram with a forged source IP reached the %s", name)
		}
	}
	after := counters(t, n1)
	if got := after[maps.ReasonDropSpoofedIP].Packets - before[maps.ReasonDropSpoofedIP].Packets; got < 60 {
		t.Errorf("drop_spoofed_ip moved by %d, want >= 60", got)
	}
	// What an engineer on the node sees.
	out, err := n1.Debug("counters", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []struct {
		Reason, Verdict string
		Packets         uint64
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("debug counters -o json: %v\n%s", err, out)
	}
	found := false
	for _, r := range rows {
		if r.Reason == "drop_spoofed_ip" && r.Verdict == "drop" && r.Packets >= 60 {
			found = true
		}
	}
	if !found {
		t.Errorf("debug counters does not show the spoofed packets:\n%s", out)
	}

	// The control: the same sockets and targets with a's own address work.
	if err := a.NS.NL.AddrDel(link, forged); err != nil {
		t.Fatal(err)
	}
	send(a.IP)
	for name, tg := range targets {
		if !received(tg.pc) {
			t.Errorf("a's genuine datagram did not reach the %s: the setup is broken, not the anti-spoofing", name)
		}
	}

	// A forged MAC: every frame of a is dropped, whatever its IP. The MAC
	// change flushes even permanent neighbours; put the gateway's back so
	// frames leave at all (the ARP responder refuses the forged MAC).
	if err := a.NS.NL.LinkSetHardwareAddr(link, net.HardwareAddr{0x02, 0xde, 0xad, 0xbe, 0xef, 0x01}); err != nil {
		t.Fatal(err)
	}
	hostMAC, _ := net.ParseMAC(a.Result.Interfaces[0].Mac)
	if err := a.NS.NL.NeighSet(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V4,
		State: netlink.NUD_PERMANENT, IP: net.ParseIP(agentapi.GatewayIP), HardwareAddr: hostMAC}); err != nil {
		t.Fatal(err)
	}
	before = counters(t, n1)
	send(a.IP)
	for name, tg := range targets {
		if received(tg.pc) {
			t.Errorf("a datagram with a forged source MAC reached the %s", name)
		}
	}
	after = counters(t, n1)
	if got := after[maps.ReasonDropSpoofedMAC].Packets - before[maps.ReasonDropSpoofedMAC].Packets; got < 60 {
		t.Errorf("drop_spoofed_mac moved by %d, want >= 60", got)
	}
}

// TestLegacyAttachMode forces the clsact + cls_bpf fallback: traffic moves
// over it with ip_forward=0, a restart replaces each filter in place, and
// switching to tcx leaves exactly one program per interface.
func TestLegacyAttachMode(t *testing.T) {
	v := newVNet(t, vnet.Options{PerNode: 4, AgentArgs: []string{"--attach-mode", "legacy"}})
	startAgents(t, v)
	n1 := v.Nodes[0]
	a, b, c := echoPods(t, v)
	setForwarding(t, v, false)
	pairs := [][2]*vnet.Pod{{a, b}, {a, c}, {c, b}}
	echoPairs(t, "legacy mode", 64<<10, pairs...)

	before := attachments(t, n1)
	if len(before) != 3 {
		t.Fatalf("node1 attachments: %+v, want nic + 2 pods", before)
	}
	for k, att := range before {
		if att.Mode != loader.ModeLegacy {
			t.Errorf("%s attached as %s, want legacy", k, att.Mode)
		}
	}
	out, err := n1.Exec("tc", "filter", "show", "dev", "eth0", "ingress")
	if err != nil || !strings.Contains(out, "podvnet-nic") || !strings.Contains(out, "direct-action") {
		t.Fatalf("tc filter show dev eth0 ingress: %v\n%s", err, out)
	}

	n1.StopAgent(syscall.SIGKILL)
	if err := n1.StartAgent(); err != nil {
		t.Fatal(err)
	}
	after := attachments(t, n1)
	for k, b := range before {
		if a, ok := after[k]; !ok || a.Mode != loader.ModeLegacy || a.ProgID == b.ProgID {
			t.Errorf("%s after a legacy restart: %+v (before %+v), want a replaced legacy filter", k, a, b)
		}
	}
	echoPairs(t, "after a legacy restart", 64<<10, pairs...)

	n1.StopAgent(syscall.SIGTERM)
	if err := n1.StartAgent("--attach-mode", "tcx"); err != nil {
		t.Fatal(err)
	}
	for k, a := range attachments(t, n1) {
		if a.Mode != loader.ModeTCX {
			t.Errorf("%s after switching to tcx: %+v", k, a)
		}
	}
	if out, _ := n1.Exec("tc", "filter", "show", "dev", "eth0", "ingress"); strings.Contains(out, "podvnet") {
		t.Errorf("legacy filter left after switching to tcx:\n%s", out)
	}
	echoPairs(t, "after switching to tcx", 64<<10, pairs...)
}

// TestCleanupLeavesNothing: `podvnet-agent cleanup` refuses while the agent
// runs, then removes every program, pin, veth, route and file: the bpffs
// root and the state dir are empty or gone.
func TestCleanupLeavesNothing(t *testing.T) {
	v := newVNet(t, vnet.Options{Nodes: 1, PerNode: 4})
	startAgents(t, v)
	n := v.Nodes[0]
	addPod(t, n, "a")
	b := addPod(t, n, "b")

	if out, err := n.Exec(filepath.Join(binDir, "podvnet-agent"), "cleanup", "--bpffs-root", n.BPFFS,
		"--state-dir", n.Paths().StateDir, "--socket", n.Paths().Socket); err == nil || !strings.Contains(out, "still running") {
		t.Fatalf("cleanup with the agent running must refuse: %v\n%s", err, out)
	}
	n.StopAgent(syscall.SIGTERM)
	// A release queued while the agent is down: the state dir holds the
	// allocations, the settings and the DEL queue.
	if err := b.Del(); err != nil {
		t.Fatal(err)
	}
	if q := queued(t, n); len(q) != 1 {
		t.Fatalf("queued releases %v, want b's", q)
	}
	if out, err := n.Exec(filepath.Join(binDir, "podvnet-agent"), "cleanup", "--bpffs-root", n.BPFFS,
		"--state-dir", n.Paths().StateDir, "--socket", n.Paths().Socket); err != nil {
		t.Fatalf("cleanup: %v\n%s", err, out)
	}
	if atts := attachments(t, n); len(atts) != 0 {
		t.Errorf("attachments left: %+v", atts)
	}
	// The bpffs root is the test's own mount point, so it stays; the
	// state dir goes. maps.debug and progs.debug are the kernel's, in every
	// bpffs.
	for _, dir := range []string{n.Paths().BPFFSRoot, n.Paths().StateDir} {
		entries, err := os.ReadDir(dir)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, e := range entries {
			if !strings.HasSuffix(e.Name(), ".debug") {
				t.Errorf("left in %s: %s", dir, e.Name())
			}
		}
	}
	if _, err := os.Stat(n.Paths().Socket); !os.IsNotExist(err) {
		t.Errorf("socket left: %v", err)
	}
	if out, _ := n.Exec("tc", "qdisc", "show", "dev", "eth0"); strings.Contains(out, "clsact") {
		t.Errorf("clsact left on eth0:\n%s", out)
	}
	if out, _ := n.Exec("nft", "list", "tables"); strings.Contains(out, "podvnet") {
		t.Errorf("nftables table left:\n%s", out)
	}
	assertNoVethsOrRoutes(t, n)
	if out, err := n.Debug("endpoints", "-o", "json"); err == nil {
		t.Errorf("debug endpoints still finds maps after cleanup: %s", out)
	}
}
