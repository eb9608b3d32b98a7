package loader

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/podvnet/podvnet/internal/nettest"
	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/pkg/paths"
)

func TestLoadAdoptsPinnedMaps(t *testing.T) {
	nettest.RequireRoot(t)
	root := nettest.BPFFS(t)

	d, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	ep := maps.Endpoint{Ifindex: 7, PodMAC: [6]byte{2, 0, 0, 0, 0, 5}}
	ip := mustAddr("10.240.0.5")
	if err := d.Maps.Endpoints.Put(ip, ep); err != nil {
		t.Fatal(err)
	}
	d.Close()

	d2, err := Load(root)
	if err != nil {
		t.Fatalf("second load must adopt the pinned maps: %v", err)
	}
	defer d2.Close()
	got, ok, err := d2.Maps.Endpoints.Get(ip)
	if err != nil || !ok || got != ep {
		t.Fatalf("entry after reload: %+v %v %v, want %+v", got, ok, err, ep)
	}
}

// TestLoadReplacesChangedLayout: a map pinned by a build with another
// layout is replaced by one of this build's layout, pinned at the same
// path, never silently reinterpreted; the old map lives on for whoever
// still holds it (the programs attached before the upgrade).
func TestLoadReplacesChangedLayout(t *testing.T) {
	nettest.RequireRoot(t)
	spec, err := loadPodvnet()
	if err != nil {
		t.Fatal(err)
	}
	orig := spec.Maps[maps.EndpointsMap]

	// Same sizes, fields swapped: only the BTF tells them apart.
	var ep *btf.Struct
	if err := spec.Types.TypeByName("pv_endpoint", &ep); err != nil {
		t.Fatal(err)
	}
	swapped := btf.Copy(ep).(*btf.Struct)
	swapped.Members[1].Name, swapped.Members[2].Name = swapped.Members[2].Name, swapped.Members[1].Name

	tests := []struct {
		name string
		spec func() *ebpf.MapSpec
		want string
	}{
		{"value size", func() *ebpf.MapSpec {
			s := orig.Copy()
			s.Value, s.ValueSize = nil, orig.ValueSize+4
			return s
		}, "ValueSize"},
		{"max entries", func() *ebpf.MapSpec {
			s := orig.Copy()
			s.MaxEntries = 64
			return s
		}, "MaxEntries"},
		{"member order", func() *ebpf.MapSpec {
			s := orig.Copy()
			s.Value = swapped
			return s
		}, "type pv_endpoint changed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := nettest.BPFFS(t)
			m, err := ebpf.NewMapWithOptions(tt.spec(), ebpf.MapOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			pin := paths.Node{BPFFSRoot: root}.MapPin(maps.EndpointsMap)
			if err := os.MkdirAll(filepath.Dir(pin), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := m.Pin(pin); err != nil {
				t.Fatal(err)
			}
			d, err := Load(root)
			if err != nil {
				t.Fatalf("a pinned map of another layout must be replaced: %v", err)
			}
			defer d.Close()
			if len(d.Replaced) != 1 || !strings.Contains(d.Replaced[0], maps.EndpointsMap) ||
				!strings.Contains(d.Replaced[0], tt.want) {
				t.Errorf("Replaced = %q, want one entry naming %s and %q", d.Replaced, maps.EndpointsMap, tt.want)
			}
			pinned, err := ebpf.LoadPinnedMap(pin, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer pinned.Close()
			if err := checkLayout(orig, pinned); err != nil {
				t.Errorf("the pin still holds the old layout: %v", err)
			}
			oldInfo, err1 := m.Info()
			newInfo, err2 := pinned.Info()
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			oldID, _ := oldInfo.ID()
			newID, _ := newInfo.ID()
			if oldID == newID {
				t.Error("the pin still names the old map")
			}
			if _, err := os.Stat(pin + "_replacing"); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("temporary pin left behind: %v", err)
			}
			// Loading again adopts the replacement: nothing is replaced twice.
			d2, err := Load(root)
			if err != nil {
				t.Fatal(err)
			}
			defer d2.Close()
			if len(d2.Replaced) != 0 {
				t.Errorf("second load replaced %q", d2.Replaced)
			}
		})
	}
}
