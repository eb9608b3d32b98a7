package main

import (
	"bytes"
	"testing"
)

// TestDebugBlockedOutput pins `debug blocked`'s table and JSON, and the
// summary `debug config` shows.
func TestDebugBlockedOutput(t *testing.T) {
	rows := []blockedRow{
		{Addr: "168.63.129.16", Port: 0, Proto: "tcp", Reason: "drop_wireserver", FragmentGuard: true},
		{Addr: "168.63.129.16", Port: 80, Proto: "tcp", Reason: "drop_wireserver"},
		{Addr: "168.63.129.16", Port: 32526, Proto: "tcp", Reason: "drop_hostgaplugin"},
	}
	for _, output := range []string{"table", "json"} {
		var b bytes.Buffer
		if err := printBlocked(&b, output, rows); err != nil {
			t.Fatal(err)
		}
		golden(t, "blocked."+output, b.Bytes())
	}
	if got, want := blockedList(rows), "168.63.129.16:80/tcp, 168.63.129.16:32526/tcp"; got != want {
		t.Errorf("blockedList = %q, want %q", got, want)
	}
	if got := blockedList(nil); got != "none" {
		t.Errorf("blockedList(nil) = %q, want none", got)
	}
}
