package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// SCTP one-to-one style sockets (SOCK_STREAM, IPPROTO_SCTP) behave like TCP
// for connect, accept, read and write; the standard library has no SCTP, so
// they are made with the syscalls and wrapped with net.FileConn.

var errSCTPUnsupported = errors.New("sctp: not supported by this kernel")

func sctpSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.ESOCKTNOSUPPORT) {
		return -1, errSCTPUnsupported
	}
	if err != nil {
		return -1, fmt.Errorf("sctp socket: %w", err)
	}
	return fd, nil
}

func listenSCTP(port int) (net.Listener, error) {
	fd, err := sctpSocket()
	if err != nil {
		return nil, err
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind sctp/%d: %w", port, err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen sctp/%d: %w", port, err)
	}
	return &sctpListener{fd: fd}, nil
}

type sctpListener struct{ fd int }

func (l *sctpListener) Accept() (net.Conn, error) {
	nfd, _, err := unix.Accept4(l.fd, unix.SOCK_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return fileConn(nfd)
}

func (l *sctpListener) Close() error { return unix.Shutdown(l.fd, unix.SHUT_RDWR) }

func (l *sctpListener) Addr() net.Addr { return &net.TCPAddr{} }

func dialSCTP(ctx context.Context, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return nil, fmt.Errorf("sctp address %q: want IPv4:port", addr)
	}
	fd, err := sctpSocket()
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		tv := unix.NsecToTimeval(max(1, int64(time.Until(dl))))
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("connect sctp %s: %w", addr, err)
	}
	return fileConn(fd)
}

// fileConn hands fd to the runtime poller; deadlines then work as on TCP.
func fileConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "sctp")
	defer f.Close()
	return net.FileConn(f)
}
