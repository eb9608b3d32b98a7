package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/podvnet/podvnet/pkg/loader"
	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/pkg/node"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// TestDebugOutputs pins the table and JSON formats of every debug view:
// operators' scripts read the JSON, people read the tables.
func TestDebugOutputs(t *testing.T) {
	counters := []counterRow{
		{Reason: "pod_to_local", Verdict: "redirect", Packets: 1200, Bytes: 1843200},
		{Reason: "drop_spoofed_ip", Verdict: "drop", Packets: 3, Bytes: 180},
	}
	links := []loader.Attachment{
		{Hook: maps.HookNIC, IfName: "eth0", Ifindex: 2, Mode: loader.ModeTCX, ProgID: 41, ProgName: "from_nic", LinkID: 7, Pin: "/sys/fs/bpf/podvnet/links/nic/eth0"},
		{Hook: maps.HookPod, IfName: "pv11b6102fc642", Ifindex: 5, Mode: loader.ModeLegacy, ProgID: 42, ProgName: "from_pod"},
	}
	config := []configRow{
		{"node_ip", "10.240.0.4", "map"},
		{"next_hop", maps.Config{NextHopMAC: [6]byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc}, NICMAC: [6]byte{2, 0, 0, 0, 0, 4}}.DescribeNextHop(), "map"},
		{"no_snat_cidrs", "10.240.0.0/16, 172.16.0.0/12", "map"},
		{"pod_mtu", "1500 (NIC 1500)", "agent"},
	}
	findings := []node.Finding{
		{Check: "agent", OK: true, Detail: "ready, 2 of 30 pod addresses in use, 28 free"},
		{Check: "endpoint 10.240.0.5", Detail: "no route 10.240.0.5/32 dev pv11b6102fc642", Fix: "ip route replace 10.240.0.5/32 dev pv11b6102fc642"},
	}
	endpoints := []endpointRow{
		{IP: "10.240.0.5", PodNamespace: "default", PodName: "web-0", PodUID: "6f1c2d5e-0b7a-4f7e-9d1a-2c3b4d5e6f70",
			Labels: map[string]string{"app": "web", "app.kubernetes.io/part-of": "shop"}, ContainerID: "0123456789abcdef0123", Ifindex: 5,
			IfName: "pv11b6102fc642", PodMAC: "02:0a:4d:cd:a2:e1", HostMAC: "d6:fc:a6:0a:bf:92"},
		{IP: "10.240.0.6", Labels: map[string]string{}, Ifindex: 6, IfName: "(gone)", PodMAC: "76:69:8e:1e:d3:f0", HostMAC: "aa:71:61:6c:cc:5f", Flags: 1},
	}
	event := monitorEvent{Time: "12:00:00.000001", Reason: "drop_spoofed_ip", Verdict: "drop", Hook: "from_pod", Ifindex: 5,
		IfName: "pv11b6102fc642", Proto: "udp", Src: "10.240.0.6", SrcPod: "default/web-0", Dst: "10.240.0.36", Sport: 40000, Dport: 9100, Len: 64}

	for _, output := range []string{"table", "json"} {
		var b bytes.Buffer
		if err := printCountersRows(&b, output, counters); err != nil {
			t.Fatal(err)
		}
		golden(t, "counters."+output, b.Bytes())
		b.Reset()
		if err := printLinks(&b, output, links); err != nil {
			t.Fatal(err)
		}
		golden(t, "links."+output, b.Bytes())
		b.Reset()
		if err := printConfig(&b, output, config); err != nil {
			t.Fatal(err)
		}
		golden(t, "config."+output, b.Bytes())
		b.Reset()
		if err := printFindings(&b, output, findings); err != nil {
			t.Fatal(err)
		}
		golden(t, "doctor."+output, b.Bytes())
		b.Reset()
		if err := printEndpoints(&b, output, endpoints); err != nil {
			t.Fatal(err)
		}
		golden(t, "endpoints."+output, b.Bytes())
		b.Reset()
		if err := printEvent(&b, output, event); err != nil {
			t.Fatal(err)
		}
		golden(t, "monitor."+output, b.Bytes())
	}
	if err := printLinks(&bytes.Buffer{}, "yaml", links); err == nil {
		t.Error("-o yaml must be refused")
	}
}
