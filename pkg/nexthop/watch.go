package nexthop

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podvnet/podvnet/internal/netlinkdump"
)

// Config says whose next hop to follow.
type Config struct {
	Mode    Mode
	Link    int        // the NIC's ifindex
	Gateway netip.Addr // the first host of the NIC's subnet
	// Revalidate is how often the gateway's entry is marked in use. Frames
	// the data path addresses itself never touch it, as the kernel's own
	// sends would: marked, a stale entry is probed (and a changed MAC
	// learned) and an idle one is not garbage-collected. 0: never.
	Revalidate time.Duration
	// Netns holds the NIC; nil: the caller's namespace.
	Netns *netns.NsHandle
	// OnError hears what Watch recovers from (a lost subscription, a failed
	// read); nil ignores it.
	OnError func(error)
}

// Read decides the next hop from the neighbour table as it is, and asks
// the kernel to resolve the gateway where it has not.
func Read(cfg Config) (Hop, error) {
	w, err := newWatcher(cfg)
	if err != nil {
		return Hop{}, err
	}
	defer w.nl.Close()
	return w.read()
}

// Watch calls publish with the next hop now and whenever it changes, until
// ctx ends: the NIC's neighbour updates make it read the table again (the
// table is the truth; an update only says it changed), and so does every
// Revalidate. In mode kernel nothing can change: it publishes once and
// returns. An error means it could not start.
func Watch(ctx context.Context, cfg Config, publish func(Hop)) error {
	w, err := newWatcher(cfg)
	if err != nil {
		return err
	}
	defer w.nl.Close()
	var last *Hop
	update := func() {
		h, err := w.read()
		if err != nil {
			w.report(err)
			return
		}
		if last == nil || !h.Equal(*last) {
			publish(h)
			last = &h
		}
	}
	if cfg.Mode == Kernel {
		update()
		return nil
	}
	var tick <-chan time.Time
	if cfg.Revalidate > 0 {
		t := time.NewTicker(cfg.Revalidate)
		defer t.Stop()
		tick = t.C
	}
	for {
		sub, err := w.subscribe()
		if err != nil {
			w.report(err)
		} else {
			// After subscribing: a change between the read and the
			// subscription would otherwise go unseen.
			update()
			err = w.follow(ctx, sub, tick, update)
			sub.stop()
			if err == nil {
				return nil
			}
			w.report(err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// follow runs update on every neighbour update of the NIC and every tick
// (after marking the gateway in use) until ctx ends (nil) or the
// subscription does (an error).
func (w *watcher) follow(ctx context.Context, sub *subscription, tick <-chan time.Time, update func()) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-sub.events:
			if !ok {
				return sub.ended()
			}
			if u.LinkIndex != w.cfg.Link {
				continue
			}
			// A burst of updates needs one read.
			for drained := false; !drained; {
				select {
				case _, ok := <-sub.events:
					if !ok {
						return sub.ended()
					}
				default:
					drained = true
				}
			}
			update()
		case <-tick:
			w.revalidate()
			update()
		}
	}
}

type watcher struct {
	cfg Config
	nl  *netlink.Handle
	// formerGateway are the MACs the gateway had since the watcher started.
	formerGateway []net.HardwareAddr
}

func newWatcher(cfg Config) (*watcher, error) {
	ns := netns.None()
	if cfg.Netns != nil {
		ns = *cfg.Netns
	}
	// Route only: without families a handle opens a socket for each
	// netlink family it knows.
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink handle for the next hop: %w", err)
	}
	return &watcher{cfg: cfg, nl: h}, nil
}

func (w *watcher) report(err error) {
	if w.cfg.OnError != nil {
		w.cfg.OnError(err)
	}
}

// subscription is a stream of neighbour updates.
type subscription struct {
	events chan netlink.NeighUpdate
	done   chan struct{}
	err    error // why the stream ended, set before events closes
}

// subscribe starts neighbour updates.
func (w *watcher) subscribe() (*subscription, error) {
	s := &subscription{events: make(chan netlink.NeighUpdate, 64), done: make(chan struct{})}
	err := netlink.NeighSubscribeWithOptions(s.events, s.done, netlink.NeighSubscribeOptions{
		Namespace:     w.cfg.Netns,
		ErrorCallback: func(err error) { s.err = err },
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to neighbour updates: %w", err)
	}
	return s, nil
}

// ended says why the stream closed; call it once events has.
func (s *subscription) ended() error {
	return fmt.Errorf("neighbour updates ended (%v); subscribing again", s.err)
}

// stop ends the stream.
func (s *subscription) stop() {
	close(s.done)
	// The stream's reader may be blocked on a full channel.
	go func() {
		for range s.events {
		}
	}()
}

// read decides from the table as it is; an unresolved gateway is resolved.
func (w *watcher) read() (Hop, error) {
	link, err := w.nl.LinkByIndex(w.cfg.Link)
	if err != nil {
		return Hop{}, fmt.Errorf("read NIC (ifindex %d): %w", w.cfg.Link, err)
	}
	nic := link.Attrs().HardwareAddr
	if w.cfg.Mode == Kernel {
		return Decide(Kernel, w.cfg.Gateway, nic, nil, nil), nil
	}
	neighs, gw, err := w.neighbors()
	if err != nil {
		return Hop{}, err
	}
	// No entry, or one that failed: nothing else may send to the gateway
	// soon, so ask for it. One being resolved (INCOMPLETE) is left to it.
	if gw == nil || gw.State == netlink.NUD_NONE || gw.State&netlink.NUD_FAILED != 0 {
		if err := w.use(); err != nil {
			w.report(err)
		}
	}
	h := Decide(w.cfg.Mode, w.cfg.Gateway, nic, neighs, w.formerGateway)
	// A gateway whose MAC changed leaves the fabric's answers for other
	// addresses on the old one until each is probed again.
	if gw != nil && unicastMAC(gw.MAC) && !slices.ContainsFunc(w.formerGateway, func(m net.HardwareAddr) bool { return bytes.Equal(m, gw.MAC) }) {
		w.formerGateway = append(w.formerGateway, slices.Clone(gw.MAC))
	}
	return h, nil
}

// neighbors lists the NIC's IPv4 neighbours and finds the gateway's entry.
func (w *watcher) neighbors() (_ []Neighbor, gw *Neighbor, err error) {
	list, err := netlinkdump.Retry(func() ([]netlink.Neigh, error) {
		return w.nl.NeighList(w.cfg.Link, netlink.FAMILY_V4)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list neighbours of ifindex %d: %w", w.cfg.Link, err)
	}
	out := make([]Neighbor, 0, len(list))
	for _, n := range list {
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		out = append(out, Neighbor{IP: ip.Unmap(), MAC: n.HardwareAddr, State: n.State})
	}
	for i := range out {
		if out[i].IP == w.cfg.Gateway {
			gw = &out[i]
		}
	}
	return out, gw, nil
}

// revalidate marks the gateway's entry in use, unless an operator pinned it
// (marking a permanent entry would turn it into a resolved one).
func (w *watcher) revalidate() {
	_, gw, err := w.neighbors()
	if err != nil {
		w.report(err)
		return
	}
	if gw != nil && gw.State&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0 {
		return
	}
	if err := w.use(); err != nil {
		w.report(err)
	}
}

// use tells the kernel the gateway's entry is in use (NTF_USE, `ip neigh
// replace GW dev NIC use`): a missing or failed entry is resolved, a stale
// one probed, and its use time renewed.
func (w *watcher) use() error {
	err := w.nl.NeighSet(&netlink.Neigh{LinkIndex: w.cfg.Link, Family: netlink.FAMILY_V4, IP: w.cfg.Gateway.AsSlice(),
		Flags: netlink.NTF_USE})
	if err != nil {
		return fmt.Errorf("resolve gateway %s: %w", w.cfg.Gateway, err)
	}
	return nil
}
