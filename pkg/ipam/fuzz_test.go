package ipam

import (
	"encoding/json"
	"net/netip"
	"testing"
)

// The seed corpora live in testdata/fuzz/<target>/, so plain `go test` runs
// them; `go test -fuzz FuzzX ./pkg/ipam` searches for more.

// FuzzDecodeState: whatever the state file holds, the loader returns an
// error or a state that keeps its promises (one key per IP, one IP per
// key, a known version), and that state survives a save and a load.
func FuzzDecodeState(f *testing.F) {
	f.Add([]byte(`{"version":1,"allocations":[],"cooling":[]}`))
	f.Add([]byte(`{"version":2,"pool":{"subnet":"10.240.0.0/16","primary":"10.240.0.4","secondary":["10.240.0.5"]},` +
		`"allocations":[{"ip":"10.240.0.5","network":"n","container_id":"c","ifname":"eth0","since":"2026-01-01T00:00:00Z"}],` +
		`"cooling":[{"ip":"10.240.0.6","until":"2026-01-01T00:00:30Z"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeState(b)
		if err != nil {
			return
		}
		if s.Version < oldestStateVersion || s.Version > StateVersion {
			t.Fatalf("accepted version %d", s.Version)
		}
		ips := map[netip.Addr]bool{}
		keys := map[Key]bool{}
		for _, a := range s.Allocations {
			if !a.IP.IsValid() || ips[a.IP] || keys[a.Key] {
				t.Fatalf("accepted a broken allocation list: %+v", s.Allocations)
			}
			ips[a.IP], keys[a.Key] = true, true
		}
		out, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("cannot write back what was read: %v", err)
		}
		if _, err := DecodeState(out); err != nil {
			t.Fatalf("cannot read back what was written: %v\n%s", err, out)
		}
	})
}

// FuzzParseNMAgent: any wireserver answer yields an error or interfaces
// whose pools are valid.
func FuzzParseNMAgent(f *testing.F) {
	f.Add(readTestdata(f, "nmagent-getinterfaceinfov1.xml"))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkInterfaces(t, ParseNMAgent, b)
	})
}

// FuzzParseIMDS: any IMDS answer yields an error or interfaces whose pools
// are valid.
func FuzzParseIMDS(f *testing.F) {
	f.Add(readTestdata(f, "imds-instance-network.json"))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkInterfaces(t, ParseIMDS, b)
	})
}

func checkInterfaces(t *testing.T, parse func([]byte) ([]Interface, error), b []byte) {
	ifaces, err := parse(b)
	if err != nil {
		return
	}
	if len(ifaces) == 0 {
		t.Fatal("no error and no interface")
	}
	for _, in := range ifaces {
		if in.Err != nil {
			continue
		}
		if err := in.Pool.Validate(); err != nil {
			t.Fatalf("parser produced an invalid pool: %v", err)
		}
		for _, a := range in.Pool.Secondary {
			if a == in.Pool.Primary || a == in.Pool.Gateway {
				t.Fatalf("the primary or gateway %s would be handed out", a)
			}
		}
	}
	for _, mac := range append([][]byte{nil}, macsOf(ifaces)...) {
		in, err := SelectInterface(ifaces, mac)
		if err == nil && in.Pool.Validate() != nil {
			t.Fatalf("selected an interface without a valid pool: %+v", in)
		}
	}
}

func macsOf(ifaces []Interface) [][]byte {
	var out [][]byte
	for _, in := range ifaces {
		out = append(out, in.MAC)
	}
	return out
}
