package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/pkg/nexthop"
	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// The veth floor: the least a pod path made of veth pairs can cost on this
// kernel. Two of ptp's pods on a node pair of their own, whose packets tc
// programs of a few instructions move past the nodes' stacks: from the
// sending pod's host veth straight out of the NIC with the next hop's MACs
// written (what podvnet's cached next hop does), and from the NIC straight
// into the receiving pod (redirect_peer). No anti-spoofing, map, conntrack
// or Service: nothing a CNI could leave out, so no pod path on veths is
// faster. The nodes do not forward, so no packet of the row can take the
// kernel's route instead.

// pathFloor is the row of the floor.
const pathFloor = "veth floor (ptp's pods, a bare redirect each way)"

// floorBed is the floor's pods and the programs' attachments.
type floorBed struct {
	client, server *pod
	links          []link.Link
}

// startFloor makes a client pod on nodes[0] and a server pod on nodes[1]
// with ptp, stops the nodes forwarding and attaches the floor's programs:
// the client then reaches the server only through them.
func (b *bench) startFloor(ctx context.Context, nodes []*vnet.Node) (_ *floorBed, err error) {
	f := &floorBed{}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("%s: %w", pathFloor, err), f.close(ctx))
		}
	}()
	for i, name := range []string{"floor-client", "floor-server"} {
		p, err := newPod(b, nodes[i], ptpPlugin(), name)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			f.client = p
		} else {
			f.server = p
		}
		if _, err := p.add(ctx); err != nil {
			return nil, err
		}
	}
	// Through the kernel's route first: the nodes learn their gateway's MAC.
	fl := flow{src: f.client.peer, dst: f.server.peer, addr: f.server.ip}
	if err := reachable(ctx, fl); err != nil {
		return nil, err
	}
	for i, p := range []*pod{f.client, f.server} {
		if err := nodes[i].NS.Sysctl("net.ipv4.ip_forward", "0"); err != nil {
			return nil, err
		}
		if err := f.attach(nodes[i], p); err != nil {
			return nil, fmt.Errorf("%s: %w", nodes[i].Name, err)
		}
	}
	if err := reachable(ctx, fl); err != nil {
		return nil, fmt.Errorf("with forwarding off, through the programs alone: %w", err)
	}
	return f, nil
}

// attach puts the two programs of pod p's node on it: out of the pod's
// host veth to the NIC, and from the NIC into the pod.
func (f *floorBed) attach(n *vnet.Node, p *pod) error {
	var podMAC net.HardwareAddr
	if err := p.ns.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err == nil {
			podMAC = l.Attrs().HardwareAddr
		}
		return err
	}); err != nil {
		return fmt.Errorf("pod %s: %w", p.name, err)
	}
	return n.NS.Do(func() error {
		nic, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		// ptp routes the pod's /32 through its host veth.
		routes, err := netlink.RouteGet(p.ip.AsSlice())
		if err != nil || len(routes) == 0 {
			return fmt.Errorf("route to pod %s: %v", p.ip, err)
		}
		veth, err := netlink.LinkByIndex(routes[0].LinkIndex)
		if err != nil {
			return err
		}
		// The first read asks the kernel to resolve the gateway.
		var hop nexthop.Hop
		var readErr error
		if err := pollEvery(10*time.Millisecond, 5*time.Second, "the gateway's MAC", func() bool {
			hop, readErr = nexthop.Read(nexthop.Config{Mode: nexthop.Gateway, Link: nic.Attrs().Index, Gateway: n.Pool.Gateway})
			return readErr != nil || hop.MAC != nil
		}); err != nil || readErr != nil {
			return fmt.Errorf("gateway %s: %w (%s)", n.Pool.Gateway, errors.Join(err, readErr), hop.Why)
		}
		progs := []struct {
			at    netlink.Link
			insns asm.Instructions
		}{
			{veth, floorOut(hop.MAC, nic.Attrs().HardwareAddr, nic.Attrs().Index)},
			{nic, floorIn(p.ip, podMAC, veth.Attrs().HardwareAddr, veth.Attrs().Index)},
		}
		for _, pr := range progs {
			prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "floor", Type: ebpf.SchedCLS, License: "Dual BSD/GPL", Instructions: pr.insns})
			if err != nil {
				return fmt.Errorf("load the program for %s: %w", pr.at.Attrs().Name, err)
			}
			l, err := link.AttachTCX(link.TCXOptions{Interface: pr.at.Attrs().Index, Program: prog, Attach: ebpf.AttachTCXIngress})
			prog.Close() // the link holds it
			if err != nil {
				return fmt.Errorf("attach to %s: %w", pr.at.Attrs().Name, err)
			}
			f.links = append(f.links, l)
		}
		return nil
	})
}

// close detaches the programs and deletes the pods.
func (f *floorBed) close(ctx context.Context) error {
	var errs []error
	for _, l := range slices.Backward(f.links) {
		errs = append(errs, l.Close())
	}
	f.links = nil
	var pods []*pod
	for _, p := range []*pod{f.client, f.server} {
		if p != nil {
			pods = append(pods, p)
		}
	}
	_, _, err := delAll(context.WithoutCancel(ctx), pods, false)
	return errors.Join(append(errs, err)...)
}

// Offsets in struct __sk_buff and in an IPv4 frame.
const (
	skbData    = 76
	skbDataEnd = 80
	ethLen     = 14
	ipDaddr    = ethLen + 16
)

// floorOut sends every IPv4 frame out of the NIC (ifindex nic) from nicMAC
// to gwMAC; anything else (the pod's ARP for its gateway) goes to the stack.
func floorOut(gwMAC, nicMAC net.HardwareAddr, nic int) asm.Instructions {
	insns := frameOrPass(ethLen)
	insns = append(insns, writeMACs(gwMAC, nicMAC)...)
	return append(insns, redirectOrPass(asm.FnRedirect, nic)...)
}

// floorIn hands IPv4 frames for pod into it through its host veth (ifindex
// veth), from vethMAC to podMAC; anything else goes to the stack.
func floorIn(pod netip.Addr, podMAC, vethMAC net.HardwareAddr, veth int) asm.Instructions {
	insns := frameOrPass(ipDaddr + 4)
	a := pod.As4()
	insns = append(insns,
		asm.LoadMem(asm.R5, asm.R2, ipDaddr, asm.Word),
		asm.JNE.Imm32(asm.R5, int32(binary.NativeEndian.Uint32(a[:])), "pass"),
	)
	insns = append(insns, writeMACs(podMAC, vethMAC)...)
	return append(insns, redirectOrPass(asm.FnRedirectPeer, veth)...)
}

// redirectOrPass returns redirect(ifindex, 0) and, at "pass", TC_ACT_OK.
func redirectOrPass(redirect asm.BuiltinFunc, ifindex int) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R1, int32(ifindex)),
		asm.Mov.Imm(asm.R2, 0),
		redirect.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("pass"),
		asm.Return(),
	}
}

// frameOrPass leaves the frame's start in R2 and jumps to "pass" unless the
// frame holds n bytes and is IPv4.
func frameOrPass(n int32) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, skbData, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, skbDataEnd, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, n),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half),
		asm.JNE.Imm(asm.R5, int32(binary.NativeEndian.Uint16([]byte{0x08, 0x00})), "pass"),
	}
}

// writeMACs writes the frame's destination and source MACs (frame at R2).
func writeMACs(dst, src net.HardwareAddr) asm.Instructions {
	var insns asm.Instructions
	for i, mac := range []net.HardwareAddr{dst, src} {
		off := int16(6 * i)
		insns = append(insns,
			asm.StoreImm(asm.R2, off, int64(int32(binary.NativeEndian.Uint32(mac[:4]))), asm.Word),
			asm.StoreImm(asm.R2, off+4, int64(binary.NativeEndian.Uint16(mac[4:6])), asm.Half),
		)
	}
	return insns
}
