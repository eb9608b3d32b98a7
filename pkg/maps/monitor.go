package maps

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/podvnet/podvnet/pkg/paths"
)

// LeaseTTL is how long events flow after the monitor's last renewal: a
// monitor that dies stops costing anything within this time.
const LeaseTTL = 5 * time.Second

// MonitorSession turns event reporting on for as long as it is renewed, and
// reads the events.
type MonitorSession struct {
	lease *ebpf.Map
	rd    *ringbuf.Reader
	want  Monitor
}

// ErrMonitorBusy means another monitor holds the lease.
var ErrMonitorBusy = errors.New("another debug monitor is running on this node")

// OpenMonitor opens the pinned monitor lease and event ring buffer under
// root. flags say which verdicts to report (MonitorDrops, MonitorTrace);
// ip, when valid, limits events to packets from or to it.
//
// One session at a time: the lease holds one filter and the ring buffer
// one read position, so a second session would change the first one's
// filter and take its events. A live lease refuses the second.
func OpenMonitor(root string, flags uint32, ip netip.Addr) (*MonitorSession, error) {
	lease, err := ebpf.LoadPinnedMap(paths.Node{BPFFSRoot: root}.MapPin(MonitorMap), nil)
	if err != nil {
		return nil, fmt.Errorf("open monitor lease: %w", err)
	}
	var held Monitor
	if err := lease.Lookup(uint32(0), &held); err != nil {
		lease.Close()
		return nil, fmt.Errorf("read monitor lease: %w", err)
	}
	if left := time.Duration(held.DeadlineNS) - Monotonic(); held.DeadlineNS != 0 && left > 0 {
		lease.Close()
		return nil, fmt.Errorf("%w (or one just died: its lease ends in %s); run one at a time",
			ErrMonitorBusy, left.Round(100*time.Millisecond))
	}
	ev, err := ebpf.LoadPinnedMap(paths.Node{BPFFSRoot: root}.MapPin(EventsMap), nil)
	if err != nil {
		lease.Close()
		return nil, fmt.Errorf("open event ring buffer: %w", err)
	}
	rd, err := ringbuf.NewReader(ev)
	ev.Close() // the reader holds its own reference
	if err != nil {
		lease.Close()
		return nil, fmt.Errorf("read event ring buffer: %w", err)
	}
	s := &MonitorSession{lease: lease, rd: rd, want: Monitor{Flags: flags}}
	if ip.IsValid() {
		s.want.IP = ip.As4()
	}
	if err := s.Renew(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Monotonic is the clock bpf_ktime_get_ns reads.
func Monotonic() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// Renew extends the lease by LeaseTTL.
func (s *MonitorSession) Renew() error {
	m := s.want
	m.DeadlineNS = uint64(Monotonic() + LeaseTTL)
	if err := s.lease.Put(uint32(0), &m); err != nil {
		return fmt.Errorf("renew monitor lease: %w", err)
	}
	return nil
}

// Read blocks until an event arrives or deadline passes (zero: no deadline).
// It returns os.ErrDeadlineExceeded on timeout and ringbuf.ErrClosed after
// Close.
func (s *MonitorSession) Read(deadline time.Time) (Event, error) {
	s.rd.SetDeadline(deadline)
	rec, err := s.rd.Read()
	if err != nil {
		return Event{}, err
	}
	var ev Event
	if err := binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &ev); err != nil {
		return Event{}, fmt.Errorf("decode event: %w", err)
	}
	return ev, nil
}

// Close ends the lease (reporting stops at once) and releases the maps.
func (s *MonitorSession) Close() error {
	var errs []error
	if err := s.lease.Put(uint32(0), &Monitor{}); err != nil {
		errs = append(errs, fmt.Errorf("end monitor lease: %w", err))
	}
	errs = append(errs, s.rd.Close(), s.lease.Close())
	return errors.Join(errs...)
}

// Addrs returns the event's source and destination addresses.
func (e Event) Addrs() (netip.Addr, netip.Addr) {
	return netip.AddrFrom4(e.Saddr), netip.AddrFrom4(e.Daddr)
}

// Ports returns the event's TCP/UDP ports in host order.
func (e Event) Ports() (uint16, uint16) {
	return binary.BigEndian.Uint16(e.Sport[:]), binary.BigEndian.Uint16(e.Dport[:])
}

// EtherType returns the frame's EtherType in host order.
func (e Event) EtherType() uint16 { return binary.BigEndian.Uint16(e.EthProto[:]) }
