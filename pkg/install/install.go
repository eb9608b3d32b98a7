// Package install puts the CNI plugin where the node's container runtime
// finds it: the binary into the runtime's CNI bin dir, then the network
// config list into its conf dir. Each file is replaced atomically (temp file
// in the same directory, fsync, rename, directory fsync), so a runtime that
// reads the directory at any moment, or after a crash, sees the old file or
// the new one and never a part of either.
package install

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"

	"github.com/podvnet/podvnet/internal/atomicfile"
	"github.com/podvnet/podvnet/pkg/cni"
)

const (
	// PluginType is the plugin's binary name and its "type" in a conflist.
	PluginType = "podvnet"
	// NetworkName is the "name" of the conflist DefaultConflist writes.
	NetworkName = "podvnet"
	// DefaultConfName sorts before the names other CNIs install
	// (10-azure.conflist, 10-containerd-net.conflist): runtimes use the
	// first config of the directory in lexical order.
	DefaultConfName = "05-podvnet.conflist"
	// DefaultCNIVersion is the newest version whose results containerd 1.6
	// accepts (it refuses 1.1.0 results).
	DefaultCNIVersion = "1.0.0"
	// Loopback is the reference plugin runtimes run for every pod's lo.
	Loopback = "loopback"
)

// ConfExtensions are the only files runtimes (containerd, CRI-O, through
// libcni) read from the conf dir; temp files never end like this.
var ConfExtensions = []string{".conf", ".conflist", ".json"}

// Config says what to install where.
type Config struct {
	BinDir   string // the runtime's CNI bin dir, e.g. /opt/cni/bin
	ConfDir  string // the runtime's CNI conf dir, e.g. /etc/cni/net.d
	ConfName string // the conflist's file name in ConfDir
	Plugin   string // the plugin binary to copy into BinDir
	Conflist []byte // the network config list, accepted by Check
}

// Result says what Install changed and what it could not provide.
type Result struct {
	PluginChanged   bool // the binary in BinDir was written
	ConflistChanged bool // the conflist in ConfDir was written
	// LoopbackMissing: BinDir has no loopback plugin. containerd and CRI-O
	// run it for every pod unless configured to set lo up themselves, so
	// pods will fail until the reference plugins are installed.
	LoopbackMissing bool
}

// DefaultConflist is the network config list used when the operator gives
// none: the podvnet plugin alone, talking to the agent at socket.
func DefaultConflist(cniVersion, socket string) []byte {
	b, _ := json.MarshalIndent(map[string]any{
		"cniVersion": cniVersion,
		"name":       NetworkName,
		"plugins":    []any{map[string]any{"type": PluginType, "socket": socket}},
	}, "", "  ")
	return append(b, '\n')
}

// CheckConfName refuses names a runtime would not read as a conflist.
func CheckConfName(name string) error {
	if name == "" || strings.ContainsAny(name, `/\*?[`) || strings.HasPrefix(name, ".") {
		return fmt.Errorf("conflist name %q: want a plain file name", name)
	}
	if filepath.Ext(name) != ".conflist" {
		return fmt.Errorf("conflist name %q: must end in .conflist (runtimes read *.conf as a single plugin config)", name)
	}
	return nil
}

// Check validates a conflist for this node without running anything: the
// runtime's own parser (libcni) accepts it, podvnet is its first plugin
// (the one that creates the pod's interface; chained plugins such as
// portmap follow), the plugin accepts its config, and it talks to the
// agent's socket (otherwise every pod would fail with "agent unreachable").
func Check(conflist []byte, socket string) error {
	list, err := libcni.ConfListFromBytes(conflist)
	if err != nil {
		return fmt.Errorf("conflist: %w", err)
	}
	if len(list.Plugins) == 0 {
		return errors.New("conflist: no plugins")
	}
	var n int
	for _, p := range list.Plugins {
		if p.Network.Type == PluginType {
			n++
		}
	}
	if n != 1 || list.Plugins[0].Network.Type != PluginType {
		return fmt.Errorf("conflist: want exactly one plugin of type %q, the first (found %d, first is %q)",
			PluginType, n, list.Plugins[0].Network.Type)
	}
	// The runtime hands the plugin its entry with the list's name and
	// version injected: check what the plugin will read.
	var entry map[string]any
	if err := json.Unmarshal(list.Plugins[0].Bytes, &entry); err != nil {
		return fmt.Errorf("conflist: plugin %s: %w", PluginType, err)
	}
	entry["name"], entry["cniVersion"] = list.Name, list.CNIVersion
	b, err := json.Marshal(entry)
	if err != nil {
		return fmt.Errorf("conflist: plugin %s: %w", PluginType, err)
	}
	conf, err := cni.ParseConf(b)
	if err != nil {
		return fmt.Errorf("conflist: plugin %s: %w", PluginType, err)
	}
	if filepath.Clean(conf.Socket) != filepath.Clean(socket) {
		return fmt.Errorf("conflist: plugin %s talks to %s but the agent listens on %s", PluginType, conf.Socket, socket)
	}
	return nil
}

// Install copies the plugin into BinDir, checks the conflist with the
// installed binaries as the runtime would (each plugin is found and
// supports every cniVersion a runtime may pick), and only then writes the
// conflist: a runtime never sees a config whose plugins cannot serve it.
// Files that already hold the wanted content are left alone, so repeating
// Install (every agent start) changes nothing and wakes no config watcher.
func (c Config) Install(ctx context.Context) (Result, error) {
	var res Result
	if c.BinDir == "" || c.ConfDir == "" || c.Plugin == "" {
		return res, errors.New("install: bin dir, conf dir and plugin binary are all needed")
	}
	if err := CheckConfName(c.ConfName); err != nil {
		return res, err
	}
	bin, err := os.ReadFile(c.Plugin)
	if err != nil {
		return res, fmt.Errorf("read plugin binary: %w", err)
	}
	if res.PluginChanged, err = writeAtomic(c.BinDir, PluginType, 0o755, bin); err != nil {
		return res, err
	}
	if err := validate(ctx, c.BinDir, c.Conflist); err != nil {
		return res, err
	}
	if res.ConflistChanged, err = writeAtomic(c.ConfDir, c.ConfName, 0o644, c.Conflist); err != nil {
		return res, err
	}
	if _, err := os.Stat(filepath.Join(c.BinDir, Loopback)); errors.Is(err, fs.ErrNotExist) {
		res.LoopbackMissing = true
	}
	return res, nil
}

// validate asks every plugin of the list, from binDir, whether it supports
// each version a runtime may use: cniVersion (libcni before 1.2) and every
// entry of cniVersions (newer libcni picks the highest it knows).
func validate(ctx context.Context, binDir string, conflist []byte) error {
	list, err := libcni.ConfListFromBytes(conflist)
	if err != nil {
		return fmt.Errorf("conflist: %w", err)
	}
	var raw struct {
		CNIVersion  string   `json:"cniVersion"`
		CNIVersions []string `json:"cniVersions"`
	}
	if err := json.Unmarshal(conflist, &raw); err != nil {
		return fmt.Errorf("conflist: %w", err)
	}
	if raw.CNIVersion == "" {
		return errors.New(`conflist: "cniVersion" missing (runtimes before libcni 1.2 need it)`)
	}
	cc := libcni.NewCNIConfig([]string{binDir}, nil)
	for _, v := range append([]string{raw.CNIVersion}, raw.CNIVersions...) {
		l := *list
		l.CNIVersion = v
		if _, err := cc.ValidateNetworkList(ctx, &l); err != nil {
			return fmt.Errorf("conflist with cniVersion %s, plugins in %s: %w", v, binDir, err)
		}
	}
	return nil
}

// Uninstall removes the conflist (and temp files an interrupted Install
// left): the runtime stops giving new pods to podvnet. The plugin binary
// stays, so that the runtime can still run DEL for the pods that remain.
func Uninstall(confDir, confName string) error {
	if err := CheckConfName(confName); err != nil {
		return err
	}
	removeTemps(confDir, confName)
	err := os.Remove(filepath.Join(confDir, confName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove CNI config: %w", err)
	}
	return atomicfile.SyncDir(confDir)
}

// writeAtomic makes dir/name hold data with mode, unless it already does,
// and reports whether it wrote.
func writeAtomic(dir, name string, mode fs.FileMode, data []byte) (bool, error) {
	final := filepath.Join(dir, name)
	removeTemps(dir, name)
	if st, err := os.Stat(final); err == nil && st.Mode().Perm() == mode && st.Mode().IsRegular() {
		if old, err := os.ReadFile(final); err == nil && bytes.Equal(old, data) {
			return false, nil
		}
	}
	// The runtime's directories are world-readable by convention;
	// atomicfile.WriteFile would create a missing one 0700.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("create %s: %w", dir, err)
	}
	if err := atomicfile.WriteFile(final, data, mode); err != nil {
		return false, err
	}
	return true, nil
}

// removeTemps deletes what an Install killed mid-write left behind. They
// are harmless (see atomicfile.TempPattern), so failing to remove them is no error.
func removeTemps(dir, name string) {
	leftovers, _ := filepath.Glob(filepath.Join(dir, atomicfile.TempPattern(name)))
	for _, p := range leftovers {
		os.Remove(p)
	}
}
