package main

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/podvnet/podvnet/pkg/agent"
	"github.com/podvnet/podvnet/pkg/kube"
	"github.com/podvnet/podvnet/pkg/services"
)

// servicesFlags say who serves Services on the node, and how.
type servicesFlags struct {
	mode, cgroupRoot, podCgroup, natPorts string
}

func (s *servicesFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&s.mode, "service-mode", string(agent.ServiceModeKubeProxy),
		"who serves Services: kube-proxy (its rules in the kernel; the data path hands Service traffic to the stack) or bpf (the data path itself, without kube-proxy; needs --node-name)")
	fl.StringVar(&s.cgroupRoot, "cgroup-root", "/run/podvnet/cgroupv2",
		"a cgroup v2 hierarchy for the socket hooks (with --service-mode bpf); mounted there when none is")
	fl.StringVar(&s.podCgroup, "pod-cgroup", "auto",
		"the pods' cgroup under --cgroup-root, where the socket hooks translate every process's Service connections; auto: the kubepods (or kubepods.slice) cgroup the agent's own pod is in; none: no socket hooks (pods' Service packets are translated one by one)")
	fl.StringVar(&s.natPorts, "service-nat-ports", "61000-65535",
		"source ports of NodePort traffic SNAT'd to the node (externalTrafficPolicy Cluster), MIN-MAX; keep them out of net.ipv4.ip_local_port_range")
}

func (s *servicesFlags) parse() (agent.ServiceConfig, error) {
	c := agent.ServiceConfig{CgroupRoot: s.cgroupRoot, PodCgroup: s.podCgroup}
	var err error
	if c.Mode, err = agent.ParseServiceMode(s.mode); err != nil {
		return c, fmt.Errorf("--service-mode: %w", err)
	}
	lo, hi, ok := strings.Cut(s.natPorts, "-")
	min, err1 := strconv.ParseUint(lo, 10, 16)
	max, err2 := strconv.ParseUint(hi, 10, 16)
	if !ok || err1 != nil || err2 != nil || min == 0 || min > max {
		return c, fmt.Errorf("--service-nat-ports %q: want MIN-MAX, 1 <= MIN <= MAX <= 65535", s.natPorts)
	}
	c.NATPortMin, c.NATPortMax = uint16(min), uint16(max)
	return c, nil
}

// servicesRelay hands what the API client learns about Services, nodes
// and this node's pods to the agent, which exists only after the client.
type servicesRelay struct {
	mu sync.Mutex
	a  *agent.Agent
}

// serve registers the agent's handlers; call before kc.Start.
func (r *servicesRelay) serve(kc *kube.Client, a *agent.Agent, log *zap.Logger) {
	r.mu.Lock()
	r.a = a
	r.mu.Unlock()
	kc.WatchServices(kube.ServicesHandler{Apply: a.ApplyService, Synced: a.ServicesSynced, NodeIPs: a.SetNodeIPs})
	kc.OnLocalPods(func(pods []kube.Pod) {
		names, ports := localPorts(pods)
		if err := a.SetLocalPods(names, ports); err != nil {
			log.Error("write the ports of this node's pods", zap.Error(err))
		}
	})
}

// apiStatus is the API client's reachability listener.
func (r *servicesRelay) apiStatus(s kube.APIStatus) {
	r.mu.Lock()
	a := r.a
	r.mu.Unlock()
	if a != nil {
		a.SetAPIUp(s.Up)
	}
}

// localPorts names the pods and lists the container ports kernel NAT may
// answer from: hostPorts' (portmap DNATs to them) and named ones (a
// Service may target one before its EndpointSlice gives the number).
func localPorts(pods []kube.Pod) (names []string, ports []services.ProtoPort) {
	proto := func(p string) uint8 {
		switch p {
		case "UDP":
			return services.UDP
		case "SCTP":
			return services.SCTP
		}
		return services.TCP
	}
	for _, p := range pods {
		names = append(names, p.String())
		for _, hp := range p.HostPorts {
			ports = append(ports, services.ProtoPort{Proto: proto(hp.Protocol), Port: uint16(hp.Port)})
		}
		for _, np := range p.Ports {
			ports = append(ports, services.ProtoPort{Proto: proto(np.Protocol), Port: uint16(np.Port)})
		}
	}
	return names, ports
}
