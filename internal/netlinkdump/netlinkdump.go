// Package netlinkdump runs netlink dumps to the end. The kernel flags a
// dump that churn interrupted (NLM_F_DUMP_INTR, netlink.ErrDumpInterrupted);
// what it returned may miss entries, so it is run again.
package netlinkdump

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
)

// attempts bounds the retries of a dump that keeps being interrupted.
const attempts = 5

// Retry runs dump until it is not interrupted, and never returns a partial
// dump: unlike containernetworking's netlinksafe, which hands back what the
// last attempt got, it fails. A reader that takes a missing entry for a gone
// one (reconcile releasing the IP of a veth it did not see) needs all or
// nothing.
func Retry[T any](dump func() ([]T, error)) ([]T, error) {
	var err error
	for range attempts {
		var out []T
		if out, err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			if err != nil {
				return nil, err
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("interrupted %d times: %w", attempts, err)
}

// Links lists every link of the calling thread's network namespace.
func Links() ([]netlink.Link, error) {
	links, err := Retry(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	return links, nil
}
