package main

import (
	"bytes"
	"testing"
)

// TestDebugServicesOutput pins `debug services`: a Service with backends
// (one local), one without endpoints, a Local NodePort with none here.
func TestDebugServicesOutput(t *testing.T) {
	rows := []serviceRow{
		{Service: "default/web:http/tcp", ID: 1, Addr: "10.0.0.50", Port: 80, Proto: "tcp", Scope: "internal", Flags: []string{"affinity=10800s"},
			Backends: []backendRow{{Slot: 1, Addr: "10.240.0.5", Port: 8080, Local: true, Conns: 12}, {Slot: 2, Addr: "10.240.0.40", Port: 8080, Conns: 9}}},
		{Service: "default/empty/udp", ID: 2, Addr: "10.0.0.51", Port: 53, Proto: "udp", Scope: "internal", Flags: []string{}, Backends: []backendRow{}},
		{Service: "default/web:http/tcp (local)", ID: 3, Addr: "*", Port: 30080, Proto: "tcp", Scope: "external", Flags: []string{"nodeport", "local", "drop"},
			Backends: []backendRow{}},
	}
	for _, output := range []string{"table", "json"} {
		var b bytes.Buffer
		if err := printServices(&b, output, rows); err != nil {
			t.Fatal(err)
		}
		golden(t, "services."+output, b.Bytes())
	}
}
