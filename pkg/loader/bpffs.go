package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// IsBPFFS reports whether path is on a bpf filesystem.
func IsBPFFS(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, err
	}
	return uint32(st.Type) == unix.BPF_FS_MAGIC, nil
}

// EnsureBPFFS makes root a directory on a bpffs, mounting one when needed as
// Cilium does: a fresh node (and CI) may have nothing at /sys/fs/bpf.
// It mounts at root itself when root can be created, else at its deepest
// existing ancestor (for /sys/fs/bpf/podvnet that is /sys/fs/bpf, because
// sysfs does not allow mkdir).
func EnsureBPFFS(root string) error {
	root = filepath.Clean(root)
	anc := root
	for {
		if _, err := os.Stat(anc); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("bpffs root %s: %w", root, err)
		}
		parent := filepath.Dir(anc)
		if parent == anc {
			break
		}
		anc = parent
	}
	if ok, err := IsBPFFS(anc); err != nil {
		return fmt.Errorf("statfs %s: %w", anc, err)
	} else if ok {
		return mkdirRoot(root)
	}
	mountAt := root
	if anc != root {
		if err := os.MkdirAll(root, 0o700); err != nil {
			mountAt = anc
		}
	}
	if err := unix.Mount("bpffs", mountAt, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w", mountAt, err)
	}
	return mkdirRoot(root)
}

func mkdirRoot(root string) error {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("create bpffs root %s: %w", root, err)
	}
	return nil
}
