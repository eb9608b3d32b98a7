package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/containernetworking/cni/libcni"
	"golang.org/x/sys/unix"
)

const socket = "/run/podvnet/agent.sock"

// fakePlugin is a CNI plugin that answers VERSION with versions, padded
// to size bytes so that a torn copy would show.
func fakePlugin(versions []string, pad byte, size int) []byte {
	script := fmt.Sprintf("#!/bin/sh\necho '{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"%s\"]}'\nexit 0\n#",
		strings.Join(versions, `","`))
	b := []byte(script)
	for len(b) < size-1 {
		b = append(b, pad)
	}
	return append(b, '\n')
}

var allVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// node is a fresh node's layout: the image's plugin, and the runtime's bin
// dir (with loopback, as every containerd install has) and conf dir.
type node struct {
	plugin, binDir, confDir string
}

func newNode(t *testing.T, plugin []byte) node {
	t.Helper()
	d := t.TempDir()
	n := node{plugin: filepath.Join(d, "image", "podvnet"), binDir: filepath.Join(d, "bin"), confDir: filepath.Join(d, "net.d")}
	for _, dir := range []string{filepath.Dir(n.plugin), n.binDir, n.confDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	n.setPlugin(t, plugin)
	if err := os.WriteFile(filepath.Join(n.binDir, Loopback), fakePlugin(allVersions, ' ', 0), 0o755); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n node) setPlugin(t *testing.T, b []byte) {
	t.Helper()
	if err := os.WriteFile(n.plugin, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func (n node) config(conflist []byte) Config {
	return Config{BinDir: n.binDir, ConfDir: n.confDir, ConfName: DefaultConfName, Plugin: n.plugin, Conflist: conflist}
}

func (n node) conf() string { return filepath.Join(n.confDir, DefaultConfName) }
func (n node) bin() string  { return filepath.Join(n.binDir, PluginType) }

// runtimeConfigs lists what a runtime would load from the conf dir.
func (n node) runtimeConfigs(t *testing.T) []string {
	t.Helper()
	files, err := libcni.ConfFiles(n.confDir, ConfExtensions)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustStat(t *testing.T, path string) os.FileInfo {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestInstallOnFreshNode(t *testing.T) {
	plugin := fakePlugin(allVersions, 'a', 4096)
	n := newNode(t, plugin)
	conflist := DefaultConflist(DefaultCNIVersion, socket)
	res, err := n.config(conflist).Install(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !res.PluginChanged || !res.ConflistChanged || res.LoopbackMissing {
		t.Errorf("result %+v, want both written and loopback found", res)
	}
	if !bytes.Equal(mustRead(t, n.bin()), plugin) {
		t.Error("installed plugin differs from the image's")
	}
	if m := mustStat(t, n.bin()).Mode().Perm(); m != 0o755 {
		t.Errorf("plugin mode %v, want 0755 (the runtime execs it)", m)
	}
	if !bytes.Equal(mustRead(t, n.conf()), conflist) {
		t.Error("installed conflist differs from the one asked for")
	}
	if m := mustStat(t, n.conf()).Mode().Perm(); m != 0o644 {
		t.Errorf("conflist mode %v, want 0644", m)
	}
	if got := n.runtimeConfigs(t); len(got) != 1 || got[0] != n.conf() {
		t.Errorf("runtime would read %v, want only %s", got, n.conf())
	}
	list, err := libcni.ConfListFromFile(n.conf())
	if err != nil {
		t.Fatal(err)
	}
	if list.CNIVersion != "1.0.0" || list.Plugins[0].Network.Type != PluginType {
		t.Errorf("runtime loads cniVersion %s, first plugin %s", list.CNIVersion, list.Plugins[0].Network.Type)
	}
}

// Every agent start installs again: when nothing changed, no file may be
// rewritten (a runtime watching the directory would reload for nothing).
func TestInstallIsIdempotent(t *testing.T) {
	n := newNode(t, fakePlugin(allVersions, 'a', 4096))
	cfg := n.config(DefaultConflist(DefaultCNIVersion, socket))
	if _, err := cfg.Install(context.Background()); err != nil {
		t.Fatal(err)
	}
	binBefore, confBefore := mustStat(t, n.bin()), mustStat(t, n.conf())
	res, err := cfg.Install(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.PluginChanged || res.ConflistChanged {
		t.Errorf("second install reports changes: %+v", res)
	}
	if !os.SameFile(binBefore, mustStat(t, n.bin())) || !os.SameFile(confBefore, mustStat(t, n.conf())) {
		t.Error("second install replaced a file that already held the right content")
	}

	// A file with the right bytes but a wrong mode is repaired.
	if err := os.Chmod(n.bin(), 0o644); err != nil {
		t.Fatal(err)
	}
	if res, err = cfg.Install(context.Background()); err != nil || !res.PluginChanged || res.ConflistChanged {
		t.Fatalf("after chmod 0644: %+v, %v; want only the plugin rewritten", res, err)
	}
	if m := mustStat(t, n.bin()).Mode().Perm(); m != 0o755 {
		t.Errorf("plugin mode %v after repair", m)
	}
}

// An upgrade replaces the binary under its name; a runtime still running
// the old one keeps its file.
func TestInstallUpgradeReplacesFiles(t *testing.T) {
	oldBin, newBin := fakePlugin(allVersions, 'o', 4096), fakePlugin(allVersions, 'n', 8192)
	n := newNode(t, oldBin)
	if _, err := n.config(DefaultConflist("1.0.0", socket)).Install(context.Background()); err != nil {
		t.Fatal(err)
	}
	running, err := os.Open(n.bin())
	if err != nil {
		t.Fatal(err)
	}
	defer running.Close()

	n.setPlugin(t, newBin)
	newConf := DefaultConflist("0.4.0", socket)
	res, err := n.config(newConf).Install(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !res.PluginChanged || !res.ConflistChanged {
		t.Errorf("result %+v, want both replaced", res)
	}
	if !bytes.Equal(mustRead(t, n.bin()), newBin) || !bytes.Equal(mustRead(t, n.conf()), newConf) {
		t.Error("the new version is not what is installed")
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(running); err != nil || !bytes.Equal(buf.Bytes(), oldBin) {
		t.Errorf("a process holding the old binary now reads something else (err %v)", err)
	}
}

// A conflist the plugins cannot serve is never written: the runtime would
// report the network ready and every pod would fail.
func TestInstallRefusesConfigPluginsCannotServe(t *testing.T) {
	upTo10 := []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0"}
	tests := []struct {
		name     string
		plugin   []byte
		conflist string
		wantErr  string
	}{
		{
			name:     "plugin lacks the version",
			plugin:   fakePlugin(upTo10, 'a', 512),
			conflist: `{"cniVersion":"1.1.0","name":"podvnet","plugins":[{"type":"podvnet"}]}`,
			wantErr:  `does not support config version "1.1.0"`,
		},
		{
			name:     "plugin lacks a version of cniVersions",
			plugin:   fakePlugin(upTo10, 'a', 512),
			conflist: `{"cniVersion":"1.0.0","cniVersions":["1.0.0","1.1.0"],"name":"podvnet","plugins":[{"type":"podvnet"}]}`,
			wantErr:  "cniVersion 1.1.0",
		},
		{
			name:     "chained plugin not installed",
			plugin:   fakePlugin(allVersions, 'a', 512),
			conflist: `{"cniVersion":"1.0.0","name":"podvnet","plugins":[{"type":"podvnet"},{"type":"portmap","capabilities":{"portMappings":true}}]}`,
			wantErr:  `failed to find plugin "portmap"`,
		},
		{
			name:     "no cniVersion for older runtimes",
			plugin:   fakePlugin(allVersions, 'a', 512),
			conflist: `{"cniVersions":["1.0.0"],"name":"podvnet","plugins":[{"type":"podvnet"}]}`,
			wantErr:  `"cniVersion" missing`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, tt.plugin)
			// A working config from before stays as it is.
			good := DefaultConflist("1.0.0", socket)
			if err := os.WriteFile(n.conf(), good, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := n.config([]byte(tt.conflist)).Install(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
			if !bytes.Equal(mustRead(t, n.conf()), good) {
				t.Error("the refused conflist replaced the working one")
			}
			if got := n.runtimeConfigs(t); len(got) != 1 {
				t.Errorf("runtime would read %v", got)
			}
		})
	}
}

func TestInstallReportsMissingLoopback(t *testing.T) {
	n := newNode(t, fakePlugin(allVersions, 'a', 512))
	if err := os.Remove(filepath.Join(n.binDir, Loopback)); err != nil {
		t.Fatal(err)
	}
	res, err := n.config(DefaultConflist("1.0.0", socket)).Install(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !res.LoopbackMissing {
		t.Error("LoopbackMissing not reported on a bin dir without loopback")
	}
}

// Readers of the final names (the runtime loading its config, exec of the
// plugin) see a whole old file or a whole new one while installs run.
func TestInstallNeverShowsAPartialFile(t *testing.T) {
	const size = 4 << 20
	a, b := fakePlugin(allVersions, 'a', size), fakePlugin(allVersions, 'b', size)
	confA, confB := DefaultConflist("1.0.0", socket), DefaultConflist("0.4.0", socket)
	n := newNode(t, a)
	if _, err := n.config(confA).Install(context.Background()); err != nil {
		t.Fatal(err)
	}

	var stop atomic.Bool
	var wg sync.WaitGroup
	var reads atomic.Int64
	errs := make(chan string, 2)
	check := func(path string, valid ...[]byte) {
		defer wg.Done()
		for !stop.Load() {
			got, err := os.ReadFile(path)
			if err != nil {
				errs <- fmt.Sprintf("read %s: %v", path, err)
				return
			}
			if !bytes.Equal(got, valid[0]) && !bytes.Equal(got, valid[1]) {
				errs <- fmt.Sprintf("%s: read %d bytes that are neither version", path, len(got))
				return
			}
			reads.Add(1)
		}
	}
	wg.Add(2)
	go check(n.bin(), a, b)
	go check(n.conf(), confA, confB)
	for i := range 20 {
		plugin, conf := a, confA
		if i%2 == 0 {
			plugin, conf = b, confB
		}
		n.setPlugin(t, plugin)
		if _, err := n.config(conf).Install(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if reads.Load() < 20 {
		t.Errorf("only %d reads ran alongside the installs", reads.Load())
	}
}

// createdIn runs f and returns the paths of the files created in dirs
// meanwhile (inotify): the names an Install killed mid-write leaves.
func createdIn(t *testing.T, f func(), dirs ...string) []string {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	watches := map[int32]string{}
	for _, d := range dirs {
		wd, err := unix.InotifyAddWatch(fd, d, unix.IN_CREATE)
		if err != nil {
			t.Fatal(err)
		}
		watches[int32(wd)] = d
	}
	f()
	var paths []string
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			return paths
		}
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)]), "\x00")
			paths = append(paths, filepath.Join(watches[ev.Wd], name))
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
}

// A crash in the middle of Install leaves at most the temp files it was
// writing: no runtime reads them, and the next Install removes them.
func TestCrashedInstallLeavesNothingARuntimeReads(t *testing.T) {
	n := newNode(t, fakePlugin(allVersions, 'a', 512))
	if _, err := n.config(DefaultConflist("1.0.0", socket)).Install(context.Background()); err != nil {
		t.Fatal(err)
	}
	n.setPlugin(t, fakePlugin(allVersions, 'b', 512))
	upgrade := n.config(DefaultConflist("0.4.0", socket))
	var temps []string
	for _, p := range createdIn(t, func() {
		if _, err := upgrade.Install(context.Background()); err != nil {
			t.Fatal(err)
		}
	}, n.binDir, n.confDir) {
		if p == n.bin() || p == n.conf() {
			t.Errorf("%s was created in place, not renamed into place", p)
			continue
		}
		temps = append(temps, p)
	}
	if len(temps) != 2 {
		t.Fatalf("install wrote through %v, want one temp file per directory", temps)
	}

	// What a crash before each rename leaves: a half-written temp file.
	for _, tmp := range temps {
		if err := os.WriteFile(tmp, []byte(`{"cniVersion":"1.0.0","name":"half`), 0o600); err != nil {
			t.Fatal(err)
		}
		if filepath.Dir(tmp) == n.binDir && filepath.Base(tmp) == PluginType {
			t.Errorf("temp %s is what the runtime execs", tmp)
		}
	}
	if got := n.runtimeConfigs(t); len(got) != 1 || got[0] != n.conf() {
		t.Errorf("with crash leftovers %v the runtime would read %v", temps, got)
	}
	res, err := upgrade.Install(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.PluginChanged || res.ConflistChanged {
		t.Errorf("result %+v: nothing but leftovers needed removing", res)
	}
	for _, tmp := range temps {
		if _, err := os.Stat(tmp); !os.IsNotExist(err) {
			t.Errorf("leftover %s still there (%v)", tmp, err)
		}
	}
}

func TestUninstall(t *testing.T) {
	n := newNode(t, fakePlugin(allVersions, 'a', 512))
	if _, err := n.config(DefaultConflist("1.0.0", socket)).Install(context.Background()); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(n.confDir, "10-other.conflist")
	if err := os.WriteFile(other, []byte(`{}`), 0o644); err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(n.confDir, "."+DefaultConfName+".tmp-123")
	if err := os.WriteFile(leftover, []byte(`{`), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 2 { // removing what is gone succeeds
		if err := Uninstall(n.confDir, DefaultConfName); err != nil {
			t.Fatal(err)
		}
	}
	if got := n.runtimeConfigs(t); len(got) != 1 || got[0] != other {
		t.Errorf("after uninstall the runtime would read %v, want only the other CNI's %s", got, other)
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("temp leftover not removed: %v", err)
	}
	if _, err := os.Stat(n.bin()); err != nil {
		t.Errorf("plugin binary removed (%v): DEL of remaining pods needs it", err)
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name     string
		conflist string
		wantErr  string // "" means valid
	}{
		{name: "default", conflist: string(DefaultConflist(DefaultCNIVersion, socket))},
		{
			name:     "chained with portmap, cniVersions",
			conflist: `{"cniVersion":"1.0.0","cniVersions":["1.0.0","1.1.0"],"name":"podvnet","plugins":[{"type":"podvnet","socket":"/run/podvnet/agent.sock","logLevel":"debug"},{"type":"portmap","capabilities":{"portMappings":true}}]}`,
		},
		{name: "socket defaults to the agent's", conflist: `{"cniVersion":"1.0.0","name":"podvnet","plugins":[{"type":"podvnet"}]}`},
		{name: "not JSON", conflist: `{"cniVersion":`, wantErr: "conflist: error parsing configuration list"},
		{name: "no name", conflist: `{"cniVersion":"1.0.0","plugins":[{"type":"podvnet"}]}`, wantErr: "no name"},
		{name: "no plugins", conflist: `{"cniVersion":"1.0.0","name":"podvnet","plugins":[]}`, wantErr: "no plugins"},
		{
			name:     "other socket",
			conflist: `{"cniVersion":"1.0.0","name":"podvnet","plugins":[{"type":"podvnet","socket":"/var/run/other.sock"}]}`,
			wantErr:  "talks to /var/run/other.sock but the agent listens on /run/podvnet/agent.sock",
		},
		{
			name:     "podvnet not first",
			conflist: `{"cniVersion":"1.0.0","name":"podvnet","plugins":[{"type":"portmap"},{"type":"podvnet"}]}`,
			wantErr:  `found 1, first is "portmap"`,
		},
		{
			name:     "podvnet twice",
			conflist: `{"cniVersion":"1.0.0","name":"podvnet","plugins":[{"type":"podvnet"},{"type":"podvnet"}]}`,
			wantErr:  "found 2",
		},
		{
			name:     "another CNI's list",
			conflist: `{"cniVersion":"1.0.0","name":"azure","plugins":[{"type":"azure-vnet"}]}`,
			wantErr:  `found 0, first is "azure-vnet"`,
		},
		{
			name:     "field the plugin refuses",
			conflist: `{"cniVersion":"1.0.0","name":"podvnet","plugins":[{"type":"podvnet","logLevel":"trace"}]}`,
			wantErr:  `field "logLevel"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check([]byte(tt.conflist), socket)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestCheckConfName(t *testing.T) {
	for name, ok := range map[string]bool{
		"05-podvnet.conflist": true, "podvnet.conflist": true,
		"": false, "05-podvnet.conf": false, "05-podvnet.json": false, "../05-podvnet.conflist": false,
		".05-podvnet.conflist": false, "a*.conflist": false,
	} {
		if err := CheckConfName(name); (err == nil) != ok {
			t.Errorf("CheckConfName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}
