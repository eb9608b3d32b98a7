package loader

import (
	"os"
	"testing"
)

// TestMain lets the test binary serve as the client the socket hooks'
// tests start inside a cgroup (sockClientEnv); otherwise it runs the tests.
func TestMain(m *testing.M) {
	if os.Getenv(sockClientEnv) != "" {
		os.Exit(sockClient())
	}
	os.Exit(m.Run())
}
