package netlinkdump

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestRetry(t *testing.T) {
	calls := 0
	got, err := Retry(func() ([]int, error) {
		calls++
		if calls < 3 {
			return []int{1}, netlink.ErrDumpInterrupted // partial
		}
		return []int{1, 2}, nil
	})
	if err != nil || len(got) != 2 || calls != 3 {
		t.Fatalf("Retry = %v, %v after %d calls, want the whole dump of the third", got, err, calls)
	}

	calls = 0
	got, err = Retry(func() ([]int, error) { calls++; return []int{1}, netlink.ErrDumpInterrupted })
	if !errors.Is(err, netlink.ErrDumpInterrupted) || got != nil || calls != attempts {
		t.Fatalf("Retry of a dump always interrupted = %v, %v after %d calls, want no entries and the error", got, err, calls)
	}

	boom := errors.New("boom")
	calls = 0
	if _, err := Retry(func() ([]int, error) { calls++; return nil, boom }); !errors.Is(err, boom) || calls != 1 {
		t.Fatalf("Retry of a failing dump = %v after %d calls, want boom at once", err, calls)
	}
}
