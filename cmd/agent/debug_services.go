package main

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/podvnet/podvnet/internal/ipproto"
	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/pkg/paths"
	"github.com/podvnet/podvnet/pkg/services"
)

// serviceRow is one frontend as `debug services -o json` prints it, with
// the backends its slots name and the connections each was given.
type serviceRow struct {
	Service  string       `json:"service"` // namespace/name:port/proto; "" when the names file lacks it
	ID       uint32       `json:"id"`
	Addr     string       `json:"addr"` // "*" for a NodePort: every node IP
	Port     uint16       `json:"port"`
	Proto    string       `json:"proto"`
	Scope    string       `json:"scope"` // internal (pods, node) or external (from outside)
	Flags    []string     `json:"flags"`
	Backends []backendRow `json:"backends"`
}

type backendRow struct {
	Slot  int    `json:"slot"`
	Addr  string `json:"addr"`
	Port  uint16 `json:"port"`
	Local bool   `json:"local"`
	Conns uint64 `json:"connections"`
}

func newDebugServicesCommand(p *paths.Node) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "services",
		Short: "The Services' frontends and backends as the maps hold them (--service-mode bpf), with each backend's connections",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			set, err := maps.OpenPinned(p.BPFFSRoot)
			if err != nil {
				return err
			}
			defer set.Close()
			names, err := services.ReadNames(p.ServicesFile())
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %v; Services show by id\n", err)
			}
			rows, err := serviceRows(set.Services, names)
			if err != nil {
				return err
			}
			return printServices(cmd.OutOrStdout(), output, rows)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

// serviceRows reads every frontend with its slots' backends.
func serviceRows(m *maps.Services, names services.Names) ([]serviceRow, error) {
	fronts, err := m.Frontends()
	if err != nil {
		return nil, err
	}
	bes, err := m.Backends()
	if err != nil {
		return nil, err
	}
	byID := map[uint32]maps.BackendEntry{}
	for _, b := range bes {
		byID[b.ID] = b
	}
	rows := make([]serviceRow, 0, len(fronts))
	for _, f := range fronts {
		r := serviceRow{Service: names[f.ID], ID: f.ID, Addr: f.Addr.String(), Port: f.Port, Proto: ipproto.Name(f.Proto),
			Scope: "internal", Flags: frontendFlags(f.Flags, f.AffinityTimeout), Backends: []backendRow{}}
		if f.Flags&maps.SvcNodePort != 0 {
			r.Addr = "*"
		}
		if f.Scope == maps.ScopeExternal {
			r.Scope = "external"
		}
		slots, err := m.Slots(f.ID, int(f.Count))
		if err != nil {
			return nil, err
		}
		for i, id := range slots {
			b := byID[id]
			row := backendRow{Slot: i + 1, Port: b.Port, Local: b.Flags&maps.BackendLocal != 0, Conns: b.Conns}
			if b.Addr.IsValid() {
				row.Addr = b.Addr.String()
			}
			r.Backends = append(r.Backends, row)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

func frontendFlags(f uint16, timeout uint32) []string {
	out := []string{}
	for _, fl := range []struct {
		bit  uint16
		name string
	}{{maps.SvcNodePort, "nodeport"}, {maps.SvcExternal, "external"}, {maps.SvcLocal, "local"}, {maps.SvcDrop, "drop"}} {
		if f&fl.bit != 0 {
			out = append(out, fl.name)
		}
	}
	if f&maps.SvcAffinity != 0 {
		out = append(out, fmt.Sprintf("affinity=%ds", timeout))
	}
	return out
}

func printServices(w io.Writer, output string, rows []serviceRow) error {
	return render(w, output, rows, func(tw *tabwriter.Writer) string {
		fmt.Fprintln(tw, "SERVICE\tFRONTEND\tSCOPE\tFLAGS\tSLOT\tBACKEND\tCONNECTIONS")
		backends := 0
		for _, r := range rows {
			head := fmt.Sprintf("%s\t%s:%d/%s\t%s\t%s", dash(r.Service), r.Addr, r.Port, r.Proto, r.Scope, dash(strings.Join(r.Flags, ",")))
			if len(r.Backends) == 0 {
				answer := "none: rejected"
				if strings.Contains(strings.Join(r.Flags, ","), "drop") {
					answer = "none here: dropped"
				}
				fmt.Fprintf(tw, "%s\t-\t(%s)\t-\n", head, answer)
			}
			for _, b := range r.Backends {
				be := fmt.Sprintf("%s:%d", dash(b.Addr), b.Port)
				if b.Local {
					be += " (local)"
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%d\n", head, b.Slot, be, b.Conns)
				head = "\t\t\t"
				backends++
			}
		}
		return fmt.Sprintf("%s, %s", count(len(rows), "frontend", "frontends"), count(backends, "backend slot", "backend slots"))
	})
}

// serviceNamer names the Service of a monitor event about a translation,
// from the pinned maps and the names file, read again at most once a
// second: Services come and go while a monitor runs.
type serviceNamer struct {
	p       paths.Node
	checked time.Time
	fronts  map[maps.FrontendKey]uint32
	byBE    map[maps.BackendAddr][]uint32 // backend -> the frontend ids whose slots name it
	names   services.Names
}

func (n *serviceNamer) refresh() {
	if time.Since(n.checked) < time.Second {
		return
	}
	n.checked = time.Now()
	set, err := maps.OpenPinned(n.p.BPFFSRoot)
	if err != nil {
		return
	}
	defer set.Close()
	rows, err := serviceRows(set.Services, nil)
	if err != nil {
		return
	}
	n.fronts, n.byBE = map[maps.FrontendKey]uint32{}, map[maps.BackendAddr][]uint32{}
	for _, r := range rows {
		addr, _ := netip.ParseAddr(r.Addr)
		if r.Addr == "*" {
			addr = netip.IPv4Unspecified()
		}
		scope := maps.ScopeInternal
		if r.Scope == "external" {
			scope = maps.ScopeExternal
		}
		proto := protoNumbers[r.Proto]
		n.fronts[maps.FrontendKey{Addr: addr, Port: r.Port, Proto: proto, Scope: scope}] = r.ID
		for _, b := range r.Backends {
			ba, _ := netip.ParseAddr(b.Addr)
			k := maps.BackendAddr{Addr: ba, Port: b.Port, Proto: proto}
			if !slices.Contains(n.byBE[k], r.ID) {
				n.byBE[k] = append(n.byBE[k], r.ID)
			}
		}
	}
	if names, err := services.ReadNames(n.p.ServicesFile()); err == nil {
		n.names = names
	}
}

var protoNumbers = map[string]uint8{"tcp": 6, "udp": 17, "sctp": 132}

// name is the Service an event is about: its destination's frontend (a
// socket call, a flow's first packet or a refusal), or for a reply the
// Services its source backend serves.
func (n *serviceNamer) name(ev maps.Event) string {
	n.refresh()
	src, dst := ev.Addrs()
	sport, dport := ev.Ports()
	idName := func(id uint32) string {
		if s := n.names[id]; s != "" {
			return s
		}
		return fmt.Sprintf("id %d", id)
	}
	for _, addr := range []netip.Addr{dst, netip.IPv4Unspecified()} {
		for _, scope := range []uint8{maps.ScopeInternal, maps.ScopeExternal} {
			if id, ok := n.fronts[maps.FrontendKey{Addr: addr, Port: dport, Proto: ev.Proto, Scope: scope}]; ok {
				return idName(id)
			}
		}
	}
	var out []string
	for _, id := range n.byBE[maps.BackendAddr{Addr: src, Port: sport, Proto: ev.Proto}] {
		out = append(out, idName(id))
	}
	slices.Sort(out)
	return strings.Join(slices.Compact(out), ",")
}
