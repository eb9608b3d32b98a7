package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/utils/sysctl"
)

// kubeletSysctls are the machine-wide settings kubelet sets at start
// (vm.overcommit_memory=1, kernel.panic=10, ...: its "kernel tunables").
// They are not namespaced: a kubelet in a network namespace changes the
// host's.
var kubeletSysctls = []string{
	"vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
	"kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes",
}

// sysctlRecord holds the host's values from before any cluster's kubelet
// ran. It outlives a test process killed with SIGKILL, and it is shared by
// clusters that run at the same time: the first writes it, the last to
// close (or the next one after a killed run) restores it and removes it.
// Saving in memory instead would let a cluster started while another runs
// "restore" the other's kubelet values.
var sysctlRecord = filepath.Join(os.TempDir(), "podvnet-cluster-sysctls.json")

// withSysctlLock runs f holding the record's lock.
func withSysctlLock(f func() error) error {
	lock, err := os.OpenFile(sysctlRecord+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	return f()
}

// recordSysctls writes the host's current values to the record unless it
// exists already (a cluster runs, or a killed one left it, and its values
// are the host's).
func recordSysctls() error {
	return withSysctlLock(func() error {
		if _, err := os.Stat(sysctlRecord); err == nil {
			return nil
		}
		saved := map[string]string{}
		for _, k := range kubeletSysctls {
			v, err := sysctl.Sysctl(k)
			if err != nil {
				return fmt.Errorf("save sysctl %s: %w", k, err)
			}
			saved[k] = strings.TrimSpace(v)
		}
		b, _ := json.Marshal(saved)
		return os.WriteFile(sysctlRecord, b, 0o600)
	})
}

// restoreSysctls writes the recorded values back and removes the record,
// unless another cluster's nodes exist (it runs, or is being built).
func restoreSysctls() error {
	return withSysctlLock(func() error {
		if otherNodes() {
			return nil
		}
		b, err := os.ReadFile(sysctlRecord)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		var saved map[string]string
		if err := json.Unmarshal(b, &saved); err != nil {
			return fmt.Errorf("%s: %w", sysctlRecord, err)
		}
		var errs []error
		for k, v := range saved {
			if _, err := sysctl.Sysctl(k, v); err != nil {
				errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", k, v, err))
			}
		}
		if len(errs) == 0 {
			errs = append(errs, os.Remove(sysctlRecord))
		}
		return errors.Join(errs...)
	})
}

// otherNodes says whether any node's cgroup tree exists that is not stale:
// one with a holder, or younger than a minute (being built).
func otherNodes() bool {
	entries, _ := os.ReadDir("/sys/fs/cgroup/pids")
	for _, e := range entries {
		if !staleTree.MatchString(e.Name()) {
			continue
		}
		info, err := e.Info()
		if err == nil && (time.Since(info.ModTime()) < time.Minute || (&Node{cgroup: e.Name()}).hasHolder()) {
			return true
		}
	}
	return false
}
