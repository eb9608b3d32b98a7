package probe

import (
	"encoding/binary"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// A datagram the kernel delivered to a socket whose receive queue was full
// is dropped there: the process did not read in time (starved of CPU on a
// loaded machine), not the network's loss. Flow sockets count those drops
// (SO_RXQ_OVFL) so that a flow's report tells one from the other.

// countOverflow makes the kernel report c's receive-queue drops with each
// datagram read by readCounting.
func countOverflow(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("setsockopt SO_RXQ_OVFL: %w", serr)
	}
	return nil
}

// readCounting reads a datagram from c into buf and returns, besides it,
// how many datagrams c's receive queue had dropped by the time it was
// queued (the kernel sends the count only once it is above 0).
func readCounting(c *net.UDPConn, buf []byte) (n int, from *net.UDPAddr, drops uint32, err error) {
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, from, err := c.ReadMsgUDP(buf, oob)
	if err != nil {
		return 0, nil, 0, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return n, from, 0, nil
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SO_RXQ_OVFL && len(m.Data) >= 4 {
			drops = binary.NativeEndian.Uint32(m.Data)
		}
	}
	return n, from, drops, nil
}
