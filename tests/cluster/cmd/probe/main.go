// Command probe is the test image's program (package probe says why):
//
//	probe serve [--tcp 80,81] [--udp 80,81] [--sctp 80,81] [--control /probe/control.sock]
//	probe connect --proto tcp --addr 10.240.0.5:80 [--timeout 1s]
//	probe send --addr 10.240.0.5:9999 [--count 200] [--interval 10ms]
//
// connect prints the outcome and exits 0 when the server answered, 1 when not.
// send sends numbered UDP datagrams from its first instant, without waiting
// for anything: a pod's first packets.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/podvnet/podvnet/tests/cluster/probe"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: probe serve|connect [flags]")
	}
	switch args[0] {
	case "serve":
		return serve(args[1:])
	case "connect":
		return connect(args[1:])
	case "send":
		return send(args[1:])
	}
	return fmt.Errorf("unknown command %q: want serve, connect or send", args[0])
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var defaults []string
	for _, p := range probe.DefaultPorts {
		defaults = append(defaults, strconv.Itoa(p))
	}
	ports := func(name string) *string {
		return fs.String(name, strings.Join(defaults, ","), name+" ports, comma-separated (empty: none)")
	}
	tcp, udp, sctp := ports("tcp"), ports("udp"), ports("sctp")
	control := fs.String("control", filepath.Join(probe.ControlDir, probe.ControlSocket), "control API unix socket (empty: none)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o := probe.ServeOptions{ControlSocket: *control}
	var err error
	for _, p := range []struct {
		flag string
		to   *[]int
	}{{*tcp, &o.TCP}, {*udp, &o.UDP}, {*sctp, &o.SCTP}} {
		if *p.to, err = parsePorts(p.flag); err != nil {
			return err
		}
	}
	s, err := probe.Serve(o)
	if err != nil {
		return err
	}
	fmt.Printf("probe %s serving %s\n", s.Name, strings.Join(s.Served, ", "))
	for _, u := range s.Unsupported {
		fmt.Printf("probe: %s not supported by this kernel: not served\n", u)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	s.Close()
	return nil
}

func parsePorts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("port %q: want 1-65535", f)
		}
		out = append(out, p)
	}
	return out, nil
}

func connect(args []string) error {
	fs := flag.NewFlagSet("connect", flag.ContinueOnError)
	proto := fs.String("proto", probe.TCP, "tcp, udp or sctp")
	addr := fs.String("addr", "", "host:port")
	timeout := fs.Duration("timeout", time.Second, "for the connect and the answer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r := probe.Connect(context.Background(), probe.Target{Proto: *proto, Addr: *addr, TimeoutMS: int(timeout.Milliseconds())})
	fmt.Println(r)
	if !r.OK {
		os.Exit(1)
	}
	return nil
}

func send(args []string) error {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	addr := fs.String("addr", "", "host:port to send UDP datagrams to")
	count := fs.Int("count", 200, "datagrams")
	interval := fs.Duration("interval", 10*time.Millisecond, "between datagrams")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sent, err := probe.Send(*addr, *count, *interval)
	fmt.Printf("sent %d datagrams to %s\n", sent, *addr)
	return err
}
