package probe

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// Server is a running `probe serve`.
type Server struct {
	Name string
	// Served lists what listens, e.g. "tcp/80"; Unsupported the protocols
	// the kernel refused (SCTP without the sctp module).
	Served, Unsupported []string

	closers []io.Closer
	flows   flowTable
	exit    func(code int)
}

// ServeOptions say what a Server listens on.
type ServeOptions struct {
	Name          string // answered to every client; default the hostname
	TCP, UDP      []int
	SCTP          []int
	ControlSocket string // "" serves no control API
	// Exit ends the process when the control API is asked to (to test a
	// container restart); default os.Exit.
	Exit func(code int)
}

// Serve starts every listener. A protocol the kernel does not support is
// recorded in Unsupported, not an error: SCTP needs a module many kernels
// lack.
func Serve(o ServeOptions) (*Server, error) {
	if o.Name == "" {
		o.Name, _ = os.Hostname()
	}
	if o.Exit == nil {
		o.Exit = os.Exit
	}
	s := &Server{Name: o.Name, exit: o.Exit, flows: flowTable{m: map[int]*flowRun{}}}
	for _, p := range o.TCP {
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(p))
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("listen tcp/%d: %w", p, err)
		}
		s.add(ln, "tcp/"+port(ln.Addr()))
		go s.acceptLoop(ln)
	}
	for _, p := range o.UDP {
		pc, err := net.ListenPacket("udp", ":"+strconv.Itoa(p))
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("listen udp/%d: %w", p, err)
		}
		s.add(pc, "udp/"+port(pc.LocalAddr()))
		go s.udpLoop(pc)
	}
	for _, p := range o.SCTP {
		ln, err := listenSCTP(p)
		if errors.Is(err, errSCTPUnsupported) {
			s.Unsupported = append(s.Unsupported, "sctp")
			break
		}
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("listen sctp/%d: %w", p, err)
		}
		s.add(ln, "sctp/"+strconv.Itoa(p))
		go s.acceptLoop(ln)
	}
	if o.ControlSocket != "" {
		// A restarted container finds its predecessor's socket file.
		os.Remove(o.ControlSocket)
		if err := os.MkdirAll(filepath.Dir(o.ControlSocket), 0o755); err != nil {
			s.Close()
			return nil, err
		}
		ln, err := net.Listen("unix", o.ControlSocket)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("listen on the control socket: %w", err)
		}
		s.add(ln, "control "+o.ControlSocket)
		srv := &http.Server{Handler: s.handler(), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
	}
	return s, nil
}

// port is the port a listener got (the one asked for, or the kernel's pick
// for 0).
func port(a net.Addr) string {
	_, p, _ := net.SplitHostPort(a.String())
	return p
}

func (s *Server) add(c io.Closer, what string) {
	s.closers = append(s.closers, c)
	s.Served = append(s.Served, what)
}

// Close stops every listener.
func (s *Server) Close() {
	for _, c := range s.closers {
		c.Close()
	}
}

// acceptLoop answers each stream connection with the name line, then echoes
// every 8-byte message prefixed with it, until the client closes.
func (s *Server) acceptLoop(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			if _, err := c.Write([]byte(nameLine(s.Name, c.RemoteAddr()) + "\n")); err != nil {
				return
			}
			buf := make([]byte, 8)
			for {
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
	}
}

func (s *Server) udpLoop(pc net.PacketConn) {
	c := pc.(*net.UDPConn)
	if err := countOverflow(c); err != nil {
		fmt.Fprintf(os.Stderr, "probe: udp/%s: %v\n", port(c.LocalAddr()), err)
	}
	buf := make([]byte, 2048)
	var dropped uint32
	for {
		n, from, drops, err := readCounting(c, buf)
		if err != nil {
			return
		}
		dropped = max(dropped, drops)
		c.WriteTo(reply(udpNameLine(s.Name, from, dropped), buf[:n]), from)
	}
}

// The control API (HTTP on the unix socket):
//
//	GET  /v1/healthz             200 "ok"
//	GET  /v1/info                {"name", "served", "unsupported"}
//	POST /v1/connect             [Target] -> [Result], tried concurrently
//	POST /v1/flows               Flow -> {"id"}
//	POST /v1/flows/{id}/stop     FlowReport
//	POST /v1/exit?code=N         the process exits with N (a container crash)
func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("GET /v1/info", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"name": s.Name, "served": s.Served, "unsupported": s.Unsupported})
	})
	mux.HandleFunc("POST /v1/connect", func(w http.ResponseWriter, r *http.Request) {
		var targets []Target
		if err := json.NewDecoder(r.Body).Decode(&targets); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		results := make([]Result, len(targets))
		var wg sync.WaitGroup
		for i, t := range targets {
			wg.Go(func() { results[i] = Connect(r.Context(), t) })
		}
		wg.Wait()
		writeJSON(w, results)
	})
	mux.HandleFunc("POST /v1/flows", func(w http.ResponseWriter, r *http.Request) {
		var f Flow
		if err := json.NewDecoder(r.Body).Decode(&f); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		id, err := s.flows.start(f)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		writeJSON(w, map[string]int{"id": id})
	})
	mux.HandleFunc("POST /v1/flows/{id}/stop", func(w http.ResponseWriter, r *http.Request) {
		id, _ := strconv.Atoi(r.PathValue("id"))
		rep, ok := s.flows.stop(id)
		if !ok {
			http.Error(w, "no such flow", http.StatusNotFound)
			return
		}
		writeJSON(w, rep)
	})
	mux.HandleFunc("POST /v1/exit", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		io.WriteString(w, "exiting\n")
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		go func() { time.Sleep(100 * time.Millisecond); s.exit(code) }()
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// Connect tries one target: a stream must send the server's name line, a
// datagram must come back with it.
func Connect(ctx context.Context, t Target) Result {
	start := time.Now()
	res := Result{Target: t}
	timeout := defaultTimeout(t.TimeoutMS)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := func() error {
		if t.Proto == UDP && t.Unconnected {
			return connectUnconnected(t, timeout, &res)
		}
		c, err := dialProto(ctx, t.Proto, t.Addr)
		if err != nil {
			return err
		}
		defer c.Close()
		res.Local = c.LocalAddr().String()
		res.Remote = c.RemoteAddr().String()
		c.SetDeadline(time.Now().Add(timeout))
		if t.Proto == UDP {
			if _, err := c.Write([]byte("hello")); err != nil {
				return err
			}
			buf := make([]byte, 2048)
			n, err := c.Read(buf)
			if err != nil {
				return err
			}
			line, _, err := splitReply(buf[:n])
			res.Reply, res.Peer = parseNameLine(line)
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		res.Reply, res.Peer = parseNameLine(line[:len(line)-1])
		return nil
	}()
	res.MS = time.Since(start).Milliseconds()
	if err != nil {
		res.Error = err.Error()
	} else {
		res.OK = true
	}
	return res
}

// connectUnconnected sends a datagram from a socket that is not connected
// and takes the first answer, from wherever it comes.
func connectUnconnected(t Target, timeout time.Duration, res *Result) error {
	to, err := net.ResolveUDPAddr("udp", t.Addr)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", ":0")
	if err != nil {
		return err
	}
	defer pc.Close()
	res.Local = pc.LocalAddr().String()
	pc.SetDeadline(time.Now().Add(timeout))
	if _, err := pc.WriteTo([]byte("hello"), to); err != nil {
		return err
	}
	buf := make([]byte, 2048)
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		return err
	}
	res.From = from.String()
	line, _, err := splitReply(buf[:n])
	res.Reply, res.Peer = parseNameLine(line)
	return err
}

func dialProto(ctx context.Context, proto, addr string) (net.Conn, error) {
	switch proto {
	case TCP, UDP:
		var d net.Dialer
		return d.DialContext(ctx, proto, addr)
	case SCTP:
		return dialSCTP(ctx, addr)
	}
	return nil, fmt.Errorf("protocol %q: want tcp, udp or sctp", proto)
}
