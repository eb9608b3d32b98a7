package agent

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// cgroup2Magic is CGROUP2_SUPER_MAGIC, a cgroup v2 filesystem's statfs type.
const cgroup2Magic = 0x63677270

// podCgroupDir returns the pods' cgroup directory the socket hooks attach
// to: root (a cgroup v2 mount, made here when root is not one, as Cilium
// mounts /run/cilium/cgroupv2) joined with pods, or with "auto" the
// kubepods cgroup (cgroupfs: kubepods, systemd: kubepods.slice) that the
// agent's own pod sits in.
func podCgroupDir(root, pods string) (string, error) {
	if err := ensureCgroup2(root); err != nil {
		return "", err
	}
	if pods == "auto" {
		own, err := ownCgroup2Path()
		if err != nil {
			return "", err
		}
		if pods = kubepodsAncestor(own); pods == "" {
			return "", fmt.Errorf("--pod-cgroup auto: the agent's cgroup %q is not under kubepods (a cgroup namespace?); name the pods' cgroup", own)
		}
	}
	dir := filepath.Join(root, pods)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("pods' cgroup %s: not a directory of the cgroup v2 hierarchy at %s (--pod-cgroup %s)", dir, root, pods)
	}
	return dir, nil
}

func ensureCgroup2(root string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err == nil && st.Type == cgroup2Magic {
		return nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", root, err)
	}
	if err := unix.Mount("cgroup2", root, "cgroup2", 0, ""); err != nil {
		return fmt.Errorf("mount cgroup2 at %s: %w", root, err)
	}
	return nil
}

// ownCgroup2Path is the agent's path in the cgroup v2 hierarchy ("0::").
func ownCgroup2Path() (string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return p, nil
		}
	}
	return "", errors.New("/proc/self/cgroup has no cgroup v2 line")
}

// kubepodsAncestor returns the part of a cgroup path up to its kubepods
// (or kubepods.slice) component, or "".
func kubepodsAncestor(p string) string {
	parts := strings.Split(p, "/")
	for i, c := range parts {
		if c == "kubepods" || c == "kubepods.slice" {
			return strings.Join(parts[:i+1], "/")
		}
	}
	return ""
}
