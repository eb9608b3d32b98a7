package cni

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podvnet/podvnet/pkg/paths"
)

func TestParseConf(t *testing.T) {
	tests := []struct {
		name, conf, wantErr string
	}{
		{"minimal", `{"cniVersion":"1.0.0","name":"podvnet","type":"podvnet"}`, ""},
		{"everything", `{"cniVersion":"1.1.0","name":"podvnet","type":"podvnet","socket":"/run/p.sock",
			"logFile":"/var/log/p.log","logLevel":"debug","delQueueDir":"/var/lib/p/q",
			"dns":{"nameservers":["10.0.0.10"],"search":["svc"],"options":["ndots:5"]}}`, ""},
		{"runtime additions", `{"cniVersion":"1.0.0","name":"podvnet","type":"podvnet","runtimeConfig":{"portMappings":[]},
			"capabilities":{"portMappings":true},"prevResult":{"cniVersion":"1.0.0","interfaces":[]}}`, ""},
		{"not JSON", `{"name":`, "not JSON"},
		{"no name", `{"cniVersion":"1.0.0","type":"podvnet"}`, `field "name": missing`},
		{"no type", `{"cniVersion":"1.0.0","name":"podvnet"}`, `field "type": missing`},
		{"socket not a string", `{"cniVersion":"1.0.0","name":"podvnet","type":"podvnet","socket":5}`, `field "socket": a JSON number, want string`},
		{"relative socket", `{"cniVersion":"1.0.0","name":"podvnet","type":"podvnet","socket":"agent.sock"}`, `field "socket": "agent.sock" is not an absolute path`},
		{"relative log file", `{"cniVersion":"1.0.0","name":"podvnet","type":"podvnet","logFile":"p.log"}`, `field "logFile"`},
		{"relative queue", `{"cniVersion":"1.0.0","name":"podvnet","type":"podvnet","delQueueDir":"q"}`, `field "delQueueDir"`},
		{"log level", `{"cniVersion":"1.0.0","name":"podvnet","type":"podvnet","logLevel":"trace"}`, `field "logLevel": "trace"`},
		{"nameserver", `{"cniVersion":"1.0.0","name":"podvnet","type":"podvnet","dns":{"nameservers":["10.0.0.10","ns1"]}}`, `field "dns.nameservers[1]"`},
		{"nameservers not a list", `{"cniVersion":"1.0.0","name":"podvnet","type":"podvnet","dns":{"nameservers":"10.0.0.10"}}`, `field "dns.nameservers"`},
		{"prevResult", `{"cniVersion":"1.0.0","name":"podvnet","type":"podvnet","prevResult":{"cniVersion":"9.9.9"}}`, `field "prevResult"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConf([]byte(tt.conf))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v (%+v), want an error containing %q", err, c, tt.wantErr)
			}
		})
	}
}

func TestParseConfDefaults(t *testing.T) {
	c, err := ParseConf([]byte(`{"cniVersion":"1.0.0","name":"podvnet","type":"podvnet"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Socket != paths.DefaultSocket || c.DelQueueDir != paths.Default().DelQueueDir() {
		t.Fatalf("defaults: socket %q, queue %q", c.Socket, c.DelQueueDir)
	}
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name, args      string
		wantErr         bool
		wantNS, wantPod string
	}{
		{"kubelet", "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1", false, "kube-system", "coredns-0"},
		{"unknown keys ignored", "IgnoreUnknown=1;K8S_POD_NAME=a;SOMETHING=else", false, "", "a"},
		{"unknown key without IgnoreUnknown", "K8S_POD_NAME=a;SOMETHING=else", true, "", ""},
		{"empty", "", false, "", ""},
		{"not a pair", "IgnoreUnknown=1;K8S_POD_NAME", true, "", ""},
		{"bad IgnoreUnknown", "IgnoreUnknown=maybe", true, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseArgs(tt.args)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "CNI_ARGS") {
					t.Fatalf("got %+v, %v; want an error naming CNI_ARGS", a, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(a.K8S_POD_NAMESPACE) != tt.wantNS || string(a.K8S_POD_NAME) != tt.wantPod {
				t.Fatalf("got %q/%q, want %q/%q", a.K8S_POD_NAMESPACE, a.K8S_POD_NAME, tt.wantNS, tt.wantPod)
			}
		})
	}
}

// FuzzParseConf: any input is accepted or refused with an error, never a
// panic; an accepted config has absolute paths and survives a round trip.
func FuzzParseConf(f *testing.F) {
	for _, seed := range []string{
		`{"cniVersion":"1.0.0","name":"podvnet","type":"podvnet"}`,
		`{"cniVersion":"1.1.0","name":"podvnet","type":"podvnet","socket":"/run/p.sock","logFile":"/l","logLevel":"warn",
			"delQueueDir":"/q","dns":{"nameservers":["10.0.0.10"]},"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`,
		`{"cniVersion":"0.4.0","name":"n","type":"podvnet","prevResult":{"cniVersion":"0.4.0","interfaces":[{"name":"eth0"}],
			"ips":[{"version":"4","address":"10.240.0.5/32","interface":0}]}}`,
		`{"cniVersion":"1.0.0","name":"n","type":"podvnet","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"x"}]}}`,
		`{"name":"n","type":"t","socket":5}`, `{"name":`, `[]`, `null`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConf(b)
		if err != nil {
			return
		}
		if c.Name == "" || c.Type == "" || !filepath.IsAbs(c.Socket) || !filepath.IsAbs(c.DelQueueDir) {
			t.Fatalf("accepted %q as %+v", b, c)
		}
		// What was accepted re-encodes to a config that is accepted again.
		again, err := json.Marshal(map[string]any{"cniVersion": c.CNIVersion, "name": c.Name, "type": c.Type,
			"socket": c.Socket, "delQueueDir": c.DelQueueDir, "logFile": c.LogFile, "logLevel": c.LogLevel, "dns": c.DNS})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseConf(again); err != nil {
			t.Fatalf("accepted %q, refused its re-encoding %s: %v", b, again, err)
		}
	})
}

// FuzzParseArgs: any CNI_ARGS is parsed or refused, never a panic; an
// accepted pod name is one the input spelled out.
func FuzzParseArgs(f *testing.F) {
	for _, seed := range []string{
		"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u",
		"K8S_POD_NAME=a", "IgnoreUnknown=true;X=y", "=;=", ";;", "K8S_POD_NAME==", "IgnoreUnknown=1;K8S_POD_NAME=a;K8S_POD_NAME=b",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseArgs(s)
		if err != nil {
			return
		}
		if name := string(a.K8S_POD_NAME); name != "" && !strings.Contains(s, "K8S_POD_NAME="+name) {
			t.Fatalf("parsed pod name %q from %q", name, s)
		}
	})
}
