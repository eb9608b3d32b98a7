package cni

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/pkg/agentapi"
)

// errInjected is the failure a test makes a step return.
var errInjected = errors.New("injected failure")

// fakeAgent is the agent API with an in-memory endpoint table. A step fails
// when its error is set.
type fakeAgent struct {
	mu        sync.Mutex
	endpoints map[agentapi.DelRequest]string // key -> IP
	calls     []string
	next      int

	addErr, delErr, checkErr, statusErr, gcErr error
	// addAnswer, when set, replaces the answer of a successful Add.
	addAnswer *agentapi.AddResponse
	// realHostMAC answers the host veth's MAC as the agent does, read from
	// the calling thread's netns.
	realHostMAC bool
	check       agentapi.CheckResponse
	status      agentapi.Status
	gcReq       *agentapi.GCRequest
	// deleteVeth, when set, deletes a host veth as the agent does when it
	// releases an endpoint (the real one in the background, right after
	// answering).
	deleteVeth func(hostName string) error
}

func newFakeAgent() *fakeAgent {
	return &fakeAgent{endpoints: map[agentapi.DelRequest]string{}, status: agentapi.Status{Ready: true, Limit: 30, Free: 30}}
}

func (f *fakeAgent) record(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
}

func (f *fakeAgent) Add(_ context.Context, req agentapi.AddRequest) (agentapi.AddResponse, error) {
	f.record("Add")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.addErr != nil {
		return agentapi.AddResponse{}, f.addErr
	}
	f.next++
	ip := fmt.Sprintf("10.240.0.%d", 4+f.next)
	f.endpoints[agentapi.DelRequest{Network: req.Network, ContainerID: req.ContainerID, IfName: req.IfName}] = ip
	if f.addAnswer != nil {
		return *f.addAnswer, nil
	}
	resp := agentapi.AddResponse{IP: ip + "/32", Gateway: agentapi.GatewayIP, HostMAC: "02:00:00:00:00:01", MTU: 1500}
	if f.realHostMAC {
		l, err := netlink.LinkByName(req.HostIfName)
		if err != nil {
			return agentapi.AddResponse{}, err
		}
		resp.HostMAC = l.Attrs().HardwareAddr.String()
	}
	return resp, nil
}

func (f *fakeAgent) Del(_ context.Context, req agentapi.DelRequest) error {
	f.record("Del")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.delErr != nil {
		return f.delErr
	}
	delete(f.endpoints, req)
	if f.deleteVeth != nil {
		return f.deleteVeth(agentapi.HostVethName(req.ContainerID, req.IfName))
	}
	return nil
}

func (f *fakeAgent) Check(context.Context, agentapi.CheckRequest) (agentapi.CheckResponse, error) {
	f.record("Check")
	return f.check, f.checkErr
}

func (f *fakeAgent) GC(_ context.Context, req agentapi.GCRequest) (agentapi.GCResponse, error) {
	f.record("GC")
	f.gcReq = &req
	return agentapi.GCResponse{}, f.gcErr
}

func (f *fakeAgent) Status(context.Context) (agentapi.Status, error) {
	f.record("Status")
	return f.status, f.statusErr
}

// unreachable is what the client returns when nothing listens; sent says
// whether the request may have reached the agent (a timeout) or never left
// (a failed dial).
func unreachable(sent bool) error {
	err := error(&net.OpError{Op: "dial", Net: "unix", Err: errors.New("connect: no such file or directory")})
	if sent {
		err = context.DeadlineExceeded
	}
	return &agentapi.UnreachableError{Socket: "/run/test/agent.sock", Err: err}
}

// fakePodNetwork is the pod's network as a set of veths, failing at one
// step after doing its work, so the rollback has something to undo. It
// counts the plugin's own deletions of a host veth, the fallback.
type fakePodNetwork struct {
	failAt      string
	veths       map[string]bool // host names
	pods        map[string]bool // pod ifnames configured
	vethDeletes int             // DeleteHostVeth calls
}

func newFakePodNetwork(failAt string) *fakePodNetwork {
	return &fakePodNetwork{failAt: failAt, veths: map[string]bool{}, pods: map[string]bool{}}
}

func (f *fakePodNetwork) step(name string) error {
	if f.failAt == name {
		return fmt.Errorf("%s: %w", name, errInjected)
	}
	return nil
}

func (f *fakePodNetwork) CheckPodNetns(string) error { return f.step("CheckPodNetns") }

func (f *fakePodNetwork) CreateVeth(_, hostName, podName string) (net.HardwareAddr, error) {
	if f.veths[hostName] {
		return nil, fmt.Errorf("host veth %s %w", hostName, errExists)
	}
	f.veths[hostName] = true
	return net.HardwareAddr{2, 0, 0, 0, 0, 2}, f.step("CreateVeth")
}

func (f *fakePodNetwork) ConfigurePod(_, ifname string, _ podConfig) error {
	f.pods[ifname] = true
	return f.step("ConfigurePod")
}

// removeVeth is the veth gone, by whoever deleted it.
func (f *fakePodNetwork) removeVeth(hostName string) error {
	delete(f.veths, hostName)
	clear(f.pods) // the pod end goes with the host end
	return nil
}

func (f *fakePodNetwork) DeleteHostVeth(hostName string) error {
	f.vethDeletes++
	f.removeVeth(hostName)
	return f.step("DeleteHostVeth")
}

func (f *fakePodNetwork) RetirePodIface(_, ifname, _ string) error {
	delete(f.pods, ifname)
	return f.step("RetirePodIface")
}

func (f *fakePodNetwork) InspectPod(string, string) (podState, error) {
	return podState{}, f.step("InspectPod")
}

func (f *fakePodNetwork) InspectHost(string) (hostState, error) {
	return hostState{}, f.step("InspectHost")
}

// failingPodNetwork runs the real netlink work but makes one step fail
// after it did its work.
type failingPodNetwork struct {
	podNetwork
	failAt string
}

func (f failingPodNetwork) fail(step string, err error) error {
	if err == nil && f.failAt == step {
		return fmt.Errorf("%s: %w", step, errInjected)
	}
	return err
}

func (f failingPodNetwork) CheckPodNetns(netnsPath string) error {
	return f.fail("CheckPodNetns", f.podNetwork.CheckPodNetns(netnsPath))
}

func (f failingPodNetwork) CreateVeth(netnsPath, hostName, podName string) (net.HardwareAddr, error) {
	mac, err := f.podNetwork.CreateVeth(netnsPath, hostName, podName)
	return mac, f.fail("CreateVeth", err)
}

func (f failingPodNetwork) ConfigurePod(netnsPath, ifname string, cfg podConfig) error {
	return f.fail("ConfigurePod", f.podNetwork.ConfigurePod(netnsPath, ifname, cfg))
}

// failingWriter fails every write: stdout closed under the plugin.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) {
	return 0, fmt.Errorf("write stdout: %w", errInjected)
}
