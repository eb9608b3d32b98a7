package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"go.uber.org/zap/zaptest"

	"github.com/podvnet/podvnet/pkg/agentapi"
)

const testConf = `{"cniVersion":"1.0.0","name":"podvnet","type":"podvnet","socket":"/run/test/agent.sock"}`

func newTestPlugin(t *testing.T, conf string, agent agentClient, hn podNetwork, out io.Writer) *plugin {
	t.Helper()
	c, err := ParseConf([]byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	return &plugin{conf: c, log: zaptest.NewLogger(t), agent: agent, net: hn,
		queue: agentapi.DelQueue{Dir: filepath.Join(t.TempDir(), "del-queue")}, out: out}
}

func testArgs() *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: "c0ffee", Netns: "/run/netns/test-pod", IfName: "eth0",
		Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=u1"}
}

// addFailures are the ways an ADD can fail after it started changing
// things, with the CNI error code the runtime gets. Every one of them must
// leave nothing behind.
var addFailures = []struct {
	name  string
	setup func(a *fakeAgent) (failNetAt string, out io.Writer)
	code  uint
}{
	{"pod netns unusable", func(*fakeAgent) (string, io.Writer) { return "CheckPodNetns", nil }, types.ErrInternal},
	{"veth creation", func(*fakeAgent) (string, io.Writer) { return "CreateVeth", nil }, types.ErrInternal},
	{"agent unreachable", func(a *fakeAgent) (string, io.Writer) { a.addErr = unreachable(false); return "", nil }, types.ErrTryAgainLater},
	{"agent timed out", func(a *fakeAgent) (string, io.Writer) { a.addErr = unreachable(true); return "", nil }, types.ErrTryAgainLater},
	{"pool exhausted", func(a *fakeAgent) (string, io.Writer) {
		a.addErr = &agentapi.APIError{Status: 503, ErrorResponse: agentapi.ErrorResponse{Code: agentapi.CodePoolExhausted,
			Message: "address pool exhausted: all 30 addresses of this node's limit are in use"}}
		return "", nil
	}, types.ErrTryAgainLater},
	{"NetworkPolicy not known", func(a *fakeAgent) (string, io.Writer) {
		a.addErr = &agentapi.APIError{Status: 503, ErrorResponse: agentapi.ErrorResponse{Code: agentapi.CodePolicyUnknown,
			Message: "NetworkPolicy not known for pod default/web-0: the agent has not heard from the API server since it started (waited 5s)"}}
		return "", nil
	}, types.ErrTryAgainLater},
	{"agent internal error", func(a *fakeAgent) (string, io.Writer) {
		a.addErr = &agentapi.APIError{Status: 500, ErrorResponse: agentapi.ErrorResponse{Code: agentapi.CodeInternal, Message: "attach: boom"}}
		return "", nil
	}, types.ErrInternal},
	{"agent answer unusable", func(a *fakeAgent) (string, io.Writer) {
		a.addAnswer = &agentapi.AddResponse{IP: "10.240.0.5/24", Gateway: agentapi.GatewayIP, HostMAC: "02:00:00:00:00:01"}
		return "", nil
	}, types.ErrInternal},
	{"pod configuration", func(*fakeAgent) (string, io.Writer) { return "ConfigurePod", nil }, types.ErrInternal},
	{"printing the result", func(*fakeAgent) (string, io.Writer) { return "", failingWriter{} }, types.ErrInternal},
}

// TestAddRollsBackEachStep fails ADD at every step and checks that what
// the earlier steps made is undone: the veth, the agent's endpoint. The
// plugin deletes the veth only when the agent does not have it.
func TestAddRollsBackEachStep(t *testing.T) {
	for _, tt := range addFailures {
		t.Run(tt.name, func(t *testing.T) {
			agent := newFakeAgent()
			failAt, out := tt.setup(agent)
			hn := newFakePodNetwork(failAt)
			agent.deleteVeth = hn.removeVeth
			var stdout bytes.Buffer
			if out == nil {
				out = &stdout
			}
			p := newTestPlugin(t, testConf, agent, hn, out)
			err := cniCode(p.add(context.Background(), testArgs()))
			if err == nil {
				t.Fatal("ADD succeeded")
			}
			if err.Code != tt.code {
				t.Errorf("error code %d (%s), want %d", err.Code, err.Msg, tt.code)
			}
			if len(hn.veths) > 0 || len(hn.pods) > 0 {
				t.Errorf("left veths %v, pod interfaces %v", hn.veths, hn.pods)
			}
			if len(agent.endpoints) > 0 {
				t.Errorf("left endpoints at the agent: %v", agent.endpoints)
			}
			if stdout.Len() > 0 {
				t.Errorf("a failed ADD printed a result: %s", stdout.String())
			}
			// A request that never reached the agent needs no release,
			// and nothing was registered before the agent was asked.
			asked := slices.Contains(agent.calls, "Add")
			neverSent := agent.addErr != nil && agentapi.NeverSent(agent.addErr)
			wantDel := asked && !neverSent
			if slices.Contains(agent.calls, "Del") != wantDel {
				t.Errorf("agent calls %v: a release at the agent is wanted: %v", agent.calls, wantDel)
			}
			// The agent owns the veth once it may have been told of it.
			madeVeth := failAt != "CheckPodNetns"
			if wantPluginDelete := madeVeth && !wantDel; (hn.vethDeletes > 0) != wantPluginDelete {
				t.Errorf("the plugin deleted the veth %d times; it must exactly when the agent does not have it (%v)", hn.vethDeletes, wantPluginDelete)
			}
		})
	}
}

// TestAddRollbackWhenTheAgentVanishes: the agent took the endpoint and then
// became unreachable; the rollback queues the release instead of leaking
// the address.
func TestAddRollbackWhenTheAgentVanishes(t *testing.T) {
	agent := newFakeAgent()
	agent.delErr = unreachable(false)
	hn := newFakePodNetwork("ConfigurePod")
	agent.deleteVeth = hn.removeVeth
	p := newTestPlugin(t, testConf, agent, hn, io.Discard)
	if err := p.add(context.Background(), testArgs()); err == nil {
		t.Fatal("ADD succeeded")
	}
	entries, err := p.queue.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].ContainerID != "c0ffee" || entries[0].IfName != "eth0" || entries[0].Network != "podvnet" {
		t.Fatalf("queued releases %+v, want the one of c0ffee/eth0", entries)
	}
	if len(hn.veths) > 0 || hn.vethDeletes != 1 {
		t.Errorf("left veths %v after %d deletions by the plugin; with the agent gone, the plugin deletes it", hn.veths, hn.vethDeletes)
	}
}

// TestAddLeavesATakenNameAlone: a veth of the same name (ADD twice, or one
// the agent is still deleting) belongs to another attachment; the failed
// ADD touches neither it nor the agent.
func TestAddLeavesATakenNameAlone(t *testing.T) {
	agent := newFakeAgent()
	hn := newFakePodNetwork("")
	agent.deleteVeth = hn.removeVeth
	host := agentapi.HostVethName(testArgs().ContainerID, testArgs().IfName)
	hn.veths[host] = true
	err := newTestPlugin(t, testConf, agent, hn, io.Discard).add(context.Background(), testArgs())
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("ADD over a taken name: %v", err)
	}
	if !hn.veths[host] || hn.vethDeletes > 0 || len(agent.calls) > 0 {
		t.Fatalf("veth kept %v, deleted by the plugin %d times, agent calls %v: want it kept and the agent not asked",
			hn.veths[host], hn.vethDeletes, agent.calls)
	}
}

func TestAddResult(t *testing.T) {
	for _, ver := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(ver, func(t *testing.T) {
			conf := `{"cniVersion":"` + ver + `","name":"podvnet","type":"podvnet",
				"dns":{"nameservers":["10.0.0.10"],"search":["svc.cluster.local"]}}`
			var out bytes.Buffer
			p := newTestPlugin(t, conf, newFakeAgent(), newFakePodNetwork(""), &out)
			if err := p.add(context.Background(), testArgs()); err != nil {
				t.Fatal(err)
			}
			var raw map[string]any
			if err := json.Unmarshal(out.Bytes(), &raw); err != nil {
				t.Fatalf("stdout is not JSON: %v\n%s", err, out.String())
			}
			if raw["cniVersion"] != ver {
				t.Errorf("result cniVersion %v, want %s", raw["cniVersion"], ver)
			}
			ifs := raw["interfaces"].([]any)
			_, hasMTU := ifs[1].(map[string]any)["mtu"]
			if hasMTU != (ver == "1.1.0") {
				t.Errorf("pod interface %v: an MTU belongs in 1.1.0 results only", ifs[1])
			}
			ips := raw["ips"].([]any)[0].(map[string]any)
			if _, hasVersion := ips["version"]; hasVersion != strings.HasPrefix(ver, "0.") {
				t.Errorf("IP config %v: the version field belongs in 0.x results only", ips)
			}
			if ips["address"] != "10.240.0.5/32" || ips["gateway"] != agentapi.GatewayIP || ips["interface"] != 1.0 {
				t.Errorf("IP config %v", ips)
			}
			if dns := raw["dns"].(map[string]any); dns["nameservers"].([]any)[0] != "10.0.0.10" {
				t.Errorf("DNS %v, want the config's", dns)
			}
		})
	}
}

// TestAddAppendsToPrevResult: behind another plugin, podvnet's interfaces
// and IP follow what was there, indices shifted.
func TestAddAppendsToPrevResult(t *testing.T) {
	conf := `{"cniVersion":"1.0.0","name":"podvnet","type":"podvnet","prevResult":{"cniVersion":"1.0.0",
		"interfaces":[{"name":"lo","sandbox":"/run/netns/test-pod"}],"ips":[{"address":"127.0.0.1/8","interface":0}]}}`
	var out bytes.Buffer
	p := newTestPlugin(t, conf, newFakeAgent(), newFakePodNetwork(""), &out)
	if err := p.add(context.Background(), testArgs()); err != nil {
		t.Fatal(err)
	}
	res, err := current.NewResult(out.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	r := res.(*current.Result)
	if len(r.Interfaces) != 3 || r.Interfaces[0].Name != "lo" || r.Interfaces[2].Name != "eth0" {
		t.Fatalf("interfaces %+v, want lo then podvnet's two", r.Interfaces)
	}
	if len(r.IPs) != 2 || *r.IPs[1].Interface != 2 {
		t.Fatalf("IPs %+v, want podvnet's on interface 2", r.IPs)
	}
}

func TestDel(t *testing.T) {
	prev := `,"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/run/netns/test-pod"}],
		"ips":[{"address":"10.240.0.9/32","interface":0}]}`
	tests := []struct {
		name      string
		delErr    error
		blockQ    bool
		code      uint // 0: success
		wantQueue bool
	}{
		{"agent answers", nil, false, 0, false},
		{"agent unreachable: queued", unreachable(false), false, 0, true},
		{"agent timed out: queued", unreachable(true), false, 0, true},
		{"agent unreachable and queue unwritable", unreachable(false), true, types.ErrTryAgainLater, false},
		{"agent fails", &agentapi.APIError{Status: 500, ErrorResponse: agentapi.ErrorResponse{Code: agentapi.CodeInternal, Message: "boom"}}, false, types.ErrInternal, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newFakeAgent()
			agent.delErr = tt.delErr
			hn := newFakePodNetwork("")
			hostName := agentapi.HostVethName("c0ffee", "eth0")
			hn.veths[hostName] = true
			conf := strings.TrimSuffix(testConf, "}") + prev + "}"
			p := newTestPlugin(t, conf, agent, hn, io.Discard)
			if tt.blockQ {
				// A file where the queue directory should be.
				os.WriteFile(p.queue.Dir, nil, 0o600)
			}
			err := cniCode(p.del(context.Background(), testArgs()))
			switch {
			case tt.code == 0 && err != nil:
				t.Fatalf("DEL: %v", err)
			case tt.code != 0 && (err == nil || err.Code != tt.code):
				t.Fatalf("DEL: %v, want code %d", err, tt.code)
			}
			if tt.code == types.ErrTryAgainLater && (!strings.Contains(err.Msg, "/run/test/agent.sock") || !strings.Contains(err.Msg, p.queue.Dir)) {
				t.Errorf("error %q should name the socket and the queue", err.Msg)
			}
			switch {
			case agentapi.NeverSent(tt.delErr) || errors.As(tt.delErr, new(*agentapi.UnreachableError)):
				if hn.veths[hostName] {
					t.Error("the host veth survived a DEL without the agent")
				}
			case hn.vethDeletes > 0:
				// The agent deletes it in the background; deleting it here
				// would make every DEL wait for the kernel.
				t.Error("the plugin deleted the veth the agent owns")
			}
			entries, _ := p.queue.List()
			if got := len(entries) == 1; got != tt.wantQueue {
				t.Fatalf("queued %+v, want a queued release: %v", entries, tt.wantQueue)
			}
			if tt.wantQueue && entries[0].IP != "10.240.0.9" {
				t.Errorf("queued release records IP %q, the prevResult's is 10.240.0.9", entries[0].IP)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	tests := []struct {
		name   string
		status agentapi.Status
		err    error
		code   uint
		msg    string
	}{
		{"ready", agentapi.Status{Ready: true, Limit: 30, Allocated: 3, Free: 27}, nil, 0, ""},
		{"agent unreachable", agentapi.Status{}, unreachable(false), types.ErrPluginNotAvailable, "/run/test/agent.sock"},
		{"agent not ready", agentapi.Status{Ready: false, Reason: "agent is starting or stopping"}, nil, types.ErrPluginNotAvailable, "starting"},
		{"pool full", agentapi.Status{Ready: true, Limit: 30, Allocated: 30}, nil, types.ErrLimitedConnectivity, "limit of 30"},
		{"rest cooling", agentapi.Status{Ready: true, Limit: 30, Allocated: 28}, nil, types.ErrLimitedConnectivity, "cooling down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newFakeAgent()
			agent.status, agent.statusErr = tt.status, tt.err
			err := cniCode(newTestPlugin(t, testConf, agent, newFakePodNetwork(""), io.Discard).status(context.Background(), nil))
			if tt.code == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || err.Code != tt.code || !strings.Contains(err.Msg, tt.msg) {
				t.Fatalf("STATUS: %v, want code %d mentioning %q", err, tt.code, tt.msg)
			}
		})
	}
}

func TestGC(t *testing.T) {
	base := `{"cniVersion":"1.1.0","name":"podvnet","type":"podvnet"`
	tests := []struct {
		name  string
		conf  string
		code  uint
		valid []agentapi.Attachment
	}{
		{"valid attachments", base + `,"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`, 0,
			[]agentapi.Attachment{{ContainerID: "a", IfName: "eth0"}}},
		{"legacy key", base + `,"cni.dev/attachments":[{"containerID":"b","ifname":"eth0"}]}`, 0,
			[]agentapi.Attachment{{ContainerID: "b", IfName: "eth0"}}},
		{"none valid", base + `,"cni.dev/valid-attachments":[]}`, 0, []agentapi.Attachment{}},
		{"list missing", base + `}`, types.ErrInvalidNetworkConfig, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newFakeAgent()
			err := cniCode(newTestPlugin(t, tt.conf, agent, newFakePodNetwork(""), io.Discard).gc(context.Background(), nil))
			if tt.code != 0 {
				if err == nil || err.Code != tt.code {
					t.Fatalf("GC: %v, want code %d", err, tt.code)
				}
				if agent.gcReq != nil {
					t.Fatal("the agent was asked to GC without a list of valid attachments")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if agent.gcReq == nil || agent.gcReq.Network != "podvnet" || !slices.Equal(agent.gcReq.Valid, tt.valid) {
				t.Fatalf("agent got %+v, want valid %v", agent.gcReq, tt.valid)
			}
		})
	}
	agent := newFakeAgent()
	agent.gcErr = unreachable(false)
	err := cniCode(newTestPlugin(t, base+`,"cni.dev/valid-attachments":[]}`, agent, newFakePodNetwork(""), io.Discard).gc(context.Background(), nil))
	if err == nil || err.Code != types.ErrTryAgainLater {
		t.Fatalf("GC with the agent unreachable: %v, want code 11", err)
	}
}

// cniCode returns err as a *types.Error, wrapping a plain error the way skel
// does (code 999).
func cniCode(err error) *types.Error {
	if err == nil {
		return nil
	}
	var e *types.Error
	if errors.As(err, &e) {
		return e
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}
