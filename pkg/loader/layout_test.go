package loader

import (
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/podvnet/podvnet/pkg/maps"
)

// TestLayoutMatchesBTF keeps the Go mirrors in pkg/maps honest: every struct
// shared with C must have the same size, member order, names and offsets as
// the object's BTF, and the reason enum the same names and values.
func TestLayoutMatchesBTF(t *testing.T) {
	spec, err := loadPodvnet()
	if err != nil {
		t.Fatal(err)
	}
	mirrors := map[string]any{
		"pv_endpoint_key": maps.EndpointKey{},
		"pv_endpoint":     maps.Endpoint{},
		"pv_config":       maps.Config{},
		"pv_nosnat_key":   maps.NoSNATKey{},
		"pv_blocked_key":  maps.BlockedKey{},
		"pv_blocked":      maps.BlockedValue{},
		"pv_counter":      maps.Counter{},
		"pv_event":        maps.Event{},
		"pv_monitor":      maps.Monitor{},

		"pv_ipcache_key":        maps.IPCacheKey{},
		"pv_identity":           maps.Identity{},
		"pv_policy_key":         maps.PolicyKey{},
		"pv_policy":             maps.PolicyValue{},
		"pv_cidr_key":           maps.CIDRKey{},
		"pv_ports_key":          maps.PortsKey{},
		"pv_policy_endpoint":    maps.PolicyEndpoint{},
		"pv_policy_stats":       maps.PolicyStats{},
		"pv_policy_config":      maps.PolicyConfig{},
		"pv_flow_key":           maps.FlowKey{},
		"pv_flow":               maps.Flow{},
		"pv_frag_key":           maps.FragKey{},
		"pv_frag":               maps.Frag{},
		"pv_svc_key":            maps.SvcKey{},
		"pv_svc":                maps.Svc{},
		"pv_svc_slot_key":       maps.SvcSlotKey{},
		"pv_backend":            maps.Backend{},
		"pv_affinity_key":       maps.AffinityKey{},
		"pv_affinity":           maps.Affinity{},
		"pv_affinity_match_key": maps.AffinityMatchKey{},
		"pv_sock_key":           maps.SockKey{},
		"pv_sock_revnat":        maps.SockRevNAT{},
		"pv_nat_key":            maps.NATKey{},
		"pv_nat":                maps.NAT{},
		"pv_svc_config":         maps.SvcConfig{},
		"pv_port_bits":          maps.PortBits{},
	}
	for cName, goVal := range mirrors {
		t.Run(cName, func(t *testing.T) {
			var s *btf.Struct
			if err := spec.Types.TypeByName(cName, &s); err != nil {
				t.Fatalf("struct %s not in BTF: %v", cName, err)
			}
			gt := reflect.TypeOf(goVal)
			if int(gt.Size()) != int(s.Size) {
				t.Errorf("size: Go %s is %d bytes, C %s is %d", gt.Name(), gt.Size(), cName, s.Size)
			}
			if gt.NumField() != len(s.Members) {
				t.Fatalf("Go %s has %d fields, C %s has %d members", gt.Name(), gt.NumField(), cName, len(s.Members))
			}
			for i, m := range s.Members {
				f := gt.Field(i)
				if norm(f.Name) != norm(m.Name) {
					t.Errorf("field %d: Go %s, C %s", i, f.Name, m.Name)
				}
				if int(f.Offset) != int(m.Offset.Bytes()) {
					t.Errorf("%s: Go offset %d, C offset %d", m.Name, f.Offset, m.Offset.Bytes())
				}
				size, _ := btf.Sizeof(m.Type)
				if int(f.Type.Size()) != size {
					t.Errorf("%s: Go size %d, C size %d", m.Name, f.Type.Size(), size)
				}
			}
		})
	}

	t.Run("pv_hook", func(t *testing.T) {
		var e *btf.Enum
		if err := spec.Types.TypeByName("pv_hook", &e); err != nil {
			t.Fatalf("enum pv_hook not in BTF: %v", err)
		}
		want := map[string]maps.Hook{"PV_HOOK_POD": maps.HookPod, "PV_HOOK_NIC": maps.HookNIC,
			"PV_HOOK_TO_POD": maps.HookToPod, "PV_HOOK_TO_NIC": maps.HookToNIC,
			"PV_HOOK_SOCK": maps.HookSock, "PV_HOOK_HOST": maps.HookHost}
		if len(e.Values) != len(want) {
			t.Errorf("C has %d hooks, Go %d", len(e.Values), len(want))
		}
		for _, v := range e.Values {
			if want[v.Name] != maps.Hook(v.Value) {
				t.Errorf("%s = %d in C, %d in Go", v.Name, v.Value, want[v.Name])
			}
		}
	})

	// Every hook names its program in the object: Program(h) loads it, and
	// `debug monitor` prints the name.
	t.Run("programs", func(t *testing.T) {
		for _, h := range maps.Hooks {
			if _, ok := spec.Programs[h.Program()]; !ok {
				t.Errorf("hook %s: no program %s in the object", h, h.Program())
			}
		}
		for _, name := range maps.SockPrograms {
			if _, ok := spec.Programs[name]; !ok {
				t.Errorf("hook sock: no program %s in the object", name)
			}
		}
		if len(spec.Programs) != len(maps.Hooks)+len(maps.SockPrograms) {
			t.Errorf("the object has %d programs, Go knows %d tc hooks and %d socket programs", len(spec.Programs), len(maps.Hooks), len(maps.SockPrograms))
		}
	})

	t.Run("pv_reason", func(t *testing.T) {
		var e *btf.Enum
		if err := spec.Types.TypeByName("pv_reason", &e); err != nil {
			t.Fatalf("enum pv_reason not in BTF: %v", err)
		}
		for _, v := range e.Values {
			r := maps.Reason(v.Value)
			if v.Name == "PV_REASON_MAX" {
				if r != maps.ReasonMax {
					t.Errorf("PV_REASON_MAX=%d, Go ReasonMax=%d", v.Value, maps.ReasonMax)
				}
				continue
			}
			if want := strings.ToLower(strings.TrimPrefix(v.Name, "PV_")); r.String() != want {
				t.Errorf("value %d: C %s, Go %s", v.Value, v.Name, r)
			}
		}
		if len(e.Values) != int(maps.ReasonMax)+1 {
			t.Errorf("C has %d reasons (with MAX), Go %d", len(e.Values), maps.ReasonMax+1)
		}
	})
}

func norm(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "")) }
