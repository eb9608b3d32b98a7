package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// setSysctl writes a /proc/sys value of this network namespace and reports
// whether it changed.
func setSysctl(key, value string) (bool, error) {
	path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	old, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("read sysctl %s: %w", key, err)
	}
	if strings.TrimSpace(string(old)) == value {
		return false, nil
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return false, fmt.Errorf("set sysctl %s=%s: %w", key, value, err)
	}
	return true, nil
}

// vethSysctl is the key of a per-interface IPv4 setting; interface names
// may hold dots, which the dotted form cannot express.
func vethSysctl(ifname, setting string) string {
	return filepath.Join("/proc/sys/net/ipv4/conf", ifname, setting)
}

func setPathValue(path, value string) error {
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("write %s=%s: %w", path, value, err)
	}
	return nil
}
