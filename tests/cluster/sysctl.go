package cluster

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// kubeletSysctls are the machine-wide settings kubelet sets at start
// (vm.overcommit_memory=1, kernel.panic=10, ...: its "kernel tunables").
// They are not namespaced: a kubelet in a network namespace changes the
// host's, so the cluster saves and restores them.
var kubeletSysctls = []string{
	"vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
	"kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes",
}

type savedSysctls map[string]string

func sysctlPath(key string) string { return "/proc/sys/" + strings.ReplaceAll(key, ".", "/") }

func saveSysctls(keys []string) (savedSysctls, error) {
	s := savedSysctls{}
	for _, k := range keys {
		b, err := os.ReadFile(sysctlPath(k))
		if err != nil {
			return nil, fmt.Errorf("save sysctl %s: %w", k, err)
		}
		s[k] = strings.TrimSpace(string(b))
	}
	return s, nil
}

// restore writes back every value that changed.
func (s savedSysctls) restore() error {
	var errs []error
	for k, v := range s {
		b, err := os.ReadFile(sysctlPath(k))
		if err == nil && strings.TrimSpace(string(b)) == v {
			continue
		}
		if err := os.WriteFile(sysctlPath(k), []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", k, v, err))
		}
	}
	return errors.Join(errs...)
}
