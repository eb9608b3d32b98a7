package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podvnet/podvnet/internal/packet"
	"github.com/podvnet/podvnet/pkg/maps"
)

// setNextHop rewrites the testbed's cached Ethernet header for the VNet.
func (tb *testbed) setNextHop(t *testing.T, nextHop, nic net.HardwareAddr) {
	t.Helper()
	cfg, err := tb.dp.Maps.Config.Get()
	must(t, err)
	cfg.NextHopMAC, cfg.NICMAC = [6]byte{}, [6]byte{}
	copy(cfg.NextHopMAC[:], nextHop)
	copy(cfg.NICMAC[:], nic)
	must(t, tb.dp.Maps.Config.Set(cfg))
}

// TestNICRedirectNextHop: with a cached next hop, from_pod writes the
// Ethernet header itself (the next hop's MAC as destination, the NIC's as
// source) and counts pod_to_nic; with none, or one that cannot be a next
// hop, it leaves the header to the kernel (bpf_redirect_neigh) and counts
// pod_to_nic_neigh. TTL and checksum are the same either way.
func TestNICRedirectNextHop(t *testing.T) {
	tb := newTestbed(t)
	zero := mac("00:00:00:00:00:00")
	tests := []struct {
		name         string
		nextHop, nic net.HardwareAddr
		reason       maps.Reason
	}{
		{"cached", fabricMA, nicMAC, maps.ReasonPodToNIC},
		{"not known", zero, nicMAC, maps.ReasonPodToNICNeigh},
		{"multicast", mac("01:00:5e:00:00:01"), nicMAC, maps.ReasonPodToNICNeigh},
		{"broadcast", mac("ff:ff:ff:ff:ff:ff"), nicMAC, maps.ReasonPodToNICNeigh},
		{"NIC MAC not known", fabricMA, zero, maps.ReasonPodToNICNeigh},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb.setNextHop(t, tt.nextHop, tt.nic)
			in := tcp(fromPodA(remote))
			out := tb.runCounted(t, maps.HookPod, tb.podAIdx, in, actRedirect, tt.reason)
			wantDst, wantSrc := net.HardwareAddr(in[0:6]), net.HardwareAddr(in[6:12])
			if tt.reason == maps.ReasonPodToNIC {
				wantDst, wantSrc = tt.nextHop, tt.nic
			}
			if !bytes.Equal(out.DstMAC(), wantDst) || !bytes.Equal(out.SrcMAC(), wantSrc) {
				t.Errorf("MACs %s <- %s, want %s <- %s", out.DstMAC(), out.SrcMAC(), wantDst, wantSrc)
			}
			if out.TTL() != 63 || !out.IPv4HeaderValid() {
				t.Errorf("TTL %d (want 63), checksum valid %v", out.TTL(), out.IPv4HeaderValid())
			}
			// Everything but the MACs, TTL and checksum is the pod's.
			want := append([]byte(nil), in...)
			copy(want[0:12], out[0:12])
			want[22], want[24], want[25] = out[22], out[24], out[25]
			if !bytes.Equal(out[:len(in)], want) {
				t.Errorf("frame changed beyond its MACs, TTL and checksum:\n got % x\nwant % x", out[:len(in)], want)
			}
		})
	}

	// A TTL that runs out is dropped before any header is written.
	tb.setNextHop(t, fabricMA, nicMAC)
	ttl1 := fromPodA(remote)
	ttl1.TTL = 1
	tb.runCounted(t, maps.HookPod, tb.podAIdx, ttl1.Build(), actShot, maps.ReasonDropTTLExceeded)
}

// TestNICRedirectDelivers sends real frames from a pod's veth with from_pod
// attached and reads what leaves the NIC: BPF_PROG_TEST_RUN does not
// perform the redirect, so only this shows where it goes and what the
// kernel adds. Cached, the frame leaves the NIC as from_pod wrote it; not
// cached, the kernel routes and resolves it (here to a static neighbour).
func TestNICRedirectDelivers(t *testing.T) {
	tb := newTestbed(t)
	neighMAC := mac("02:ee:00:00:00:40") // what the kernel resolves remote to
	var podEnd, wire int
	must(t, tb.ns.Do(func() error {
		for _, name := range []string{"pva", "pvap", "eth0", "eth0p"} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: nodeIP.AsSlice(), Mask: net.CIDRMask(16, 32)}}); err != nil {
			return err
		}
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: tb.nicIdx, Family: netlink.FAMILY_V4, IP: remote.AsSlice(),
			HardwareAddr: neighMAC, State: netlink.NUD_PERMANENT}); err != nil {
			return err
		}
		if _, err := tb.dp.Attach(maps.HookPod, tb.podAIdx, "pva", ModeLegacy); err != nil {
			return err
		}
		if podEnd, err = packetSocket("pvap"); err != nil {
			return err
		}
		wire, err = packetSocket("eth0p")
		return err
	}))
	t.Cleanup(func() { unix.Close(podEnd); unix.Close(wire) })

	tests := []struct {
		name     string
		nextHop  net.HardwareAddr
		reason   maps.Reason
		wantDst  net.HardwareAddr
		udpSport uint16
	}{
		{"cached", fabricMA, maps.ReasonPodToNIC, fabricMA, 40001},
		{"resolved by the kernel", mac("00:00:00:00:00:00"), maps.ReasonPodToNICNeigh, neighMAC, 40002},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb.setNextHop(t, tt.nextHop, nicMAC)
			before := tb.counters(t)[tt.reason].Packets
			in := l4(fromPodA(remote), protoUDP, tt.udpSport, 9, 8)
			if _, err := unix.Write(podEnd, in); err != nil {
				t.Fatalf("send from the pod: %v", err)
			}
			out := receive(t, wire, func(f packet.Frame) bool {
				return len(f) >= 36 && binary.BigEndian.Uint16(f[12:]) == packet.EtherTypeIPv4 &&
					binary.BigEndian.Uint16(f[34:]) == tt.udpSport
			})
			if !bytes.Equal(out.DstMAC(), tt.wantDst) || !bytes.Equal(out.SrcMAC(), nicMAC) {
				t.Errorf("left the NIC as %s <- %s, want %s <- %s", out.DstMAC(), out.SrcMAC(), tt.wantDst, nicMAC)
			}
			if out.TTL() != 63 || !out.IPv4HeaderValid() {
				t.Errorf("TTL %d (want 63), checksum valid %v", out.TTL(), out.IPv4HeaderValid())
			}
			if got := tb.counters(t)[tt.reason].Packets - before; got != 1 {
				t.Errorf("%s counted %d packets, want 1", tt.reason, got)
			}
		})
	}
}

// packetSocket opens a raw socket on ifname, in the calling thread's
// network namespace, that sends and receives whole frames.
func packetSocket(ifname string) (int, error) {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return -1, err
	}
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, proto)
	if err != nil {
		return -1, err
	}
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: l.Attrs().Index}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// receive returns the first frame on fd that match accepts; the deadline
// only bounds a failure (the interface also carries IPv6 chatter).
func receive(t *testing.T, fd int, match func(packet.Frame) bool) packet.Frame {
	t.Helper()
	buf := make([]byte, 2048)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		if f := packet.Frame(append([]byte(nil), buf[:n]...)); match(f) {
			return f
		}
	}
	t.Fatal("the frame never left the NIC")
	return nil
}
