package agentapi

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHostVethName(t *testing.T) {
	a, b := HostVethName("c0ffee", "eth0"), HostVethName("c0ffee", "eth1")
	if a == b || a != HostVethName("c0ffee", "eth0") {
		t.Fatalf("names %q and %q: want deterministic and distinct per ifname", a, b)
	}
	if len(a) > 15 || !strings.HasPrefix(a, HostVethPrefix) {
		t.Fatalf("%q: want %s and at most 15 characters (IFNAMSIZ)", a, HostVethPrefix)
	}
	if !IsHostVethName(a) {
		t.Errorf("IsHostVethName(%q) = false for a name HostVethName made", a)
	}
	// Names podvnet never makes: a retired pod end, other interfaces.
	for _, name := range []string{"pvdel0123456789", "pv0123456789AB", "pv0123456789a", "pv0123456789abc", "eth0", "xpv0123456789ab"} {
		if IsHostVethName(name) {
			t.Errorf("IsHostVethName(%q) = true", name)
		}
	}
}

func TestDelQueue(t *testing.T) {
	q := DelQueue{Dir: filepath.Join(t.TempDir(), "del-queue")}
	if entries, err := q.List(); err != nil || len(entries) != 0 {
		t.Fatalf("a queue dir that does not exist yet: %v, %v; want empty", entries, err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	older := QueuedDel{Network: "podvnet", ContainerID: "b", IfName: "eth0", IP: "10.240.0.6", QueuedAt: t0}
	newer := QueuedDel{Network: "podvnet", ContainerID: "a", IfName: "eth0", IP: "10.240.0.5", QueuedAt: t0.Add(time.Second)}
	for _, d := range []QueuedDel{newer, older, newer} {
		if err := q.Put(d); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := q.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].QueuedDel != older || entries[1].QueuedDel != newer {
		t.Fatalf("entries %+v, want b then a, once each", entries)
	}
	files, _ := os.ReadDir(q.Dir)
	if len(files) != 2 {
		t.Fatalf("queue dir holds %d files, want 2 (no temp files left)", len(files))
	}
	if st, _ := os.Stat(entries[0].Path); st.Mode().Perm() != 0o600 {
		t.Errorf("entry mode %v, want 0600", st.Mode().Perm())
	}

	// A temp file of a write in progress is not an entry; a damaged entry
	// is reported, not skipped silently.
	os.WriteFile(filepath.Join(q.Dir, ".x.json.tmp-1"), []byte("{"), 0o600)
	os.WriteFile(filepath.Join(q.Dir, "damaged.json"), []byte(`{"network":"podvnet","container_id":"c","ifname":"eth0","extra":1}`), 0o600)
	entries, err = q.List()
	if err != nil {
		t.Fatal(err)
	}
	var damaged int
	for _, e := range entries {
		if e.Err != nil {
			damaged++
			if !strings.Contains(e.Err.Error(), "damaged.json") {
				t.Errorf("error %v should name the file", e.Err)
			}
		}
	}
	if len(entries) != 3 || damaged != 1 {
		t.Fatalf("entries %+v, want 2 good and the damaged one", entries)
	}

	if err := q.Remove("podvnet", "a", "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := q.Remove("podvnet", "a", "eth0"); err != nil {
		t.Fatalf("removing a removed entry: %v", err)
	}
	entries, _ = q.List()
	for _, e := range entries {
		if e.ContainerID == "a" {
			t.Fatal("removed entry still listed")
		}
	}
}
