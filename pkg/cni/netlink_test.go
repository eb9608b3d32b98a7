package cni

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/podvnet/podvnet/internal/nettest"
	"github.com/podvnet/podvnet/pkg/agentapi"
)

// podLinks lists the interfaces in a namespace other than lo.
func podLinks(t *testing.T, ns *nettest.NS) []string {
	t.Helper()
	links, err := ns.NL.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		if l.Attrs().Name != "lo" {
			names = append(names, l.Attrs().Name)
		}
	}
	return names
}

// TestAddRollbackRealNetwork fails ADD at every step with real namespaces
// and veths (each step does its work, then reports failure) and checks
// that neither the node nor the pod keeps anything.
func TestAddRollbackRealNetwork(t *testing.T) {
	nettest.RequireRoot(t)
	prefix := nettest.Prefix()
	node := nettest.NewNS(t, prefix+"-node")
	for i, tt := range addFailures {
		t.Run(tt.name, func(t *testing.T) {
			pod := nettest.NewNS(t, fmt.Sprintf("%s-pod%d", prefix, i))
			agent := newFakeAgent()
			// The agent deletes the host veth of an endpoint it releases.
			agent.deleteVeth = linuxPodNetwork{}.DeleteHostVeth
			failAt, out := tt.setup(agent)
			if out == nil {
				out = io.Discard
			}
			p := newTestPlugin(t, testConf, agent, failingPodNetwork{linuxPodNetwork{}, failAt}, out)
			args := testArgs()
			args.Netns = pod.Path()
			err := cniCode(node.Do(func() error { return p.add(context.Background(), args) }))
			if err == nil || err.Code != tt.code {
				t.Fatalf("ADD: %v, want code %d", err, tt.code)
			}
			if left := podLinks(t, node); len(left) > 0 {
				t.Errorf("node keeps %v", left)
			}
			if left := podLinks(t, pod); len(left) > 0 {
				t.Errorf("pod keeps %v", left)
			}
			if len(agent.endpoints) > 0 {
				t.Errorf("agent keeps %v", agent.endpoints)
			}
		})
	}
}

// TestAddCheckDelRealNetwork: what ADD builds is what CHECK expects, and
// DEL (also with the netns gone) removes it.
func TestAddCheckDelRealNetwork(t *testing.T) {
	nettest.RequireRoot(t)
	prefix := nettest.Prefix()
	node := nettest.NewNS(t, prefix+"-node")
	pod := nettest.NewNS(t, prefix+"-pod")
	agent := newFakeAgent()
	agent.realHostMAC = true
	var out bytes.Buffer
	p := newTestPlugin(t, testConf, agent, linuxPodNetwork{}, &out)
	args := testArgs()
	args.Netns = pod.Path()
	if err := node.Do(func() error { return p.add(context.Background(), args) }); err != nil {
		t.Fatal(err)
	}
	hostName := agentapi.HostVethName(args.ContainerID, args.IfName)
	if got := podLinks(t, node); len(got) != 1 || got[0] != hostName {
		t.Fatalf("node has %v, want %s", got, hostName)
	}

	// CHECK reads the result back as prevResult.
	conf := strings.TrimSuffix(testConf, "}") + `,"prevResult":` + out.String() + "}"
	check := newTestPlugin(t, conf, agent, linuxPodNetwork{}, io.Discard)
	if err := node.Do(func() error { return check.check(context.Background(), args) }); err != nil {
		t.Fatalf("CHECK right after ADD: %v", err)
	}
	// A broken pod side is named.
	l, err := pod.NL.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := pod.NL.LinkSetDown(l); err != nil {
		t.Fatal(err)
	}
	err = node.Do(func() error { return check.check(context.Background(), args) })
	if e := cniCode(err); e == nil || !strings.Contains(e.Msg, "pod interface eth0 is down") {
		t.Fatalf("CHECK with eth0 down: %v", err)
	}

	// ADD again without DEL refuses, and leaves the pod as it is.
	err = node.Do(func() error { return p.add(context.Background(), args) })
	if e := cniCode(err); e == nil || !strings.Contains(e.Msg, "already exists") {
		t.Fatalf("second ADD: %v, want an error saying eth0 already exists", err)
	}
	if got := podLinks(t, node); len(got) != 1 {
		t.Fatalf("the refused ADD changed the node: %v", got)
	}

	if err := pod.Delete(); err != nil {
		t.Fatal(err)
	}
	if err := node.Do(func() error { return p.del(context.Background(), args) }); err != nil {
		t.Fatalf("DEL with the netns gone: %v", err)
	}
	// The pair goes with the pod's netns, which the kernel tears down in
	// the background (the real agent also deletes it after DEL).
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && len(podLinks(t, node)) > 0; {
		time.Sleep(20 * time.Millisecond)
	}
	if left := podLinks(t, node); len(left) > 0 {
		t.Errorf("node keeps %v after DEL", left)
	}
}

// TestCheckPodNetns: a missing netns and the node's own netns are refused
// with error 8 naming the path.
func TestCheckPodNetns(t *testing.T) {
	nettest.RequireRoot(t)
	node := nettest.NewNS(t, nettest.Prefix()+"-node")
	for name, path := range map[string]string{
		"missing": "/run/netns/" + nettest.Prefix() + "-nonexistent",
		"own":     node.Path(),
	} {
		t.Run(name, func(t *testing.T) {
			err := node.Do(func() error { return linuxPodNetwork{}.CheckPodNetns(path) })
			if e := cniCode(err); e == nil || e.Code != types.ErrInvalidNetNS || !strings.Contains(e.Msg, path) {
				t.Fatalf("got %v, want code 8 naming %s", err, path)
			}
		})
	}
}

// TestInspectFindsWhatConfigureMade ties the CHECK observations to the real
// configuration, so that a change to one without the other shows.
func TestInspectFindsWhatConfigureMade(t *testing.T) {
	nettest.RequireRoot(t)
	prefix := nettest.Prefix()
	node := nettest.NewNS(t, prefix+"-node")
	pod := nettest.NewNS(t, prefix+"-pod")
	hn := linuxPodNetwork{}
	err := node.Do(func() error {
		podMAC, err := hn.CreateVeth(pod.Path(), "pvtest", "eth0")
		if err != nil {
			return err
		}
		host, err := node.NL.LinkByName("pvtest")
		if err != nil {
			return err
		}
		cfg := podConfig{IP: netip.MustParsePrefix("10.240.0.9/32"), Gateway: netip.MustParseAddr(agentapi.GatewayIP),
			HostMAC: host.Attrs().HardwareAddr, MTU: 1400}
		if err := hn.ConfigurePod(pod.Path(), "eth0", cfg); err != nil {
			return err
		}
		ps, err := hn.InspectPod(pod.Path(), "eth0")
		if err != nil {
			return err
		}
		hs, err := hn.InspectHost("pvtest")
		if err != nil {
			return err
		}
		res := &current.Result{Interfaces: []*current.Interface{
			{Name: "pvtest", Mac: host.Attrs().HardwareAddr.String()},
			{Name: "eth0", Mac: podMAC.String(), Sandbox: pod.Path()},
		}}
		want := expected{IfName: "eth0", PodMAC: podMAC.String(), HostName: "pvtest", HostMAC: res.Interfaces[0].Mac,
			IP: cfg.IP, Gateway: cfg.Gateway}
		if p := append(want.podProblems(pod.Path(), ps), want.hostProblems(hs, ps)...); len(p) > 0 {
			return fmt.Errorf("problems right after configuring: %v", p)
		}
		l, _ := pod.NL.LinkByName("eth0")
		if l.Attrs().MTU != 1400 {
			return fmt.Errorf("pod MTU %d, want 1400", l.Attrs().MTU)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := node.NL.LinkByName("pvtest"); err != nil {
		t.Fatal(err)
	}
	if err := node.Do(func() error { return hn.DeleteHostVeth("pvtest") }); err != nil {
		t.Fatal(err)
	}
	if _, err := node.NL.LinkByName("pvtest"); err == nil {
		t.Fatal("DeleteHostVeth left the veth")
	}
	if err := node.Do(func() error { return hn.DeleteHostVeth("pvtest") }); err != nil {
		t.Fatalf("deleting a veth that is gone: %v", err)
	}
}
