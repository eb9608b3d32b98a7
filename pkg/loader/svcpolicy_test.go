package loader

import (
	"net/netip"
	"testing"

	"github.com/podvnet/podvnet/internal/packet"
	"github.com/podvnet/podvnet/pkg/maps"
)

// TestPolicyAfterNodePort: NetworkPolicy judges a NodePort's packet as its
// backend receives it, after the translation in from_nic (Kubernetes
// defines policy on the backend pod): a VM's query to a pod isolated for
// ingress is dropped until a rule allows the VM's address on the backend's
// port (not the NodePort), and the pod's answer then goes back translated.
func TestPolicyAfterNodePort(t *testing.T) {
	b := newSvcbed(t)
	pol := b.dp.Maps.Policy
	must(t, pol.SetConfig(maps.PolicyConfig{Gen: 1, Flags: maps.PolicyConfigIsolated}))
	must(t, pol.PutIdentity(podA, idPodA))
	ep := endpoint(b.podAIdx, podAMAC, hostAMAC)
	ep.PolicyID = epA
	ep.Flags = maps.EndpointPolicyIngress
	must(t, b.dp.Maps.Endpoints.Put(podA, ep))
	must(t, pol.SetEndpoint(epA, maps.PolicyEndpoint{}))
	b.service(t, maps.Frontend{Addr: netip.IPv4Unspecified(), Port: 30081, Proto: packet.ProtoUDP, Scope: maps.ScopeExternal,
		Flags: maps.SvcNodePort | maps.SvcLocal | maps.SvcDrop}, netip.AddrPortFrom(podA, 5353))

	b.runCounted(t, maps.HookNIC, b.nicIdx, udpFrame(fabricMA, nicMAC, vm, 40000, nodeIP, 30081), actShot, maps.ReasonDropPolicyIngress)

	// A rule for the NodePort's number allows nothing: the pod's port counts.
	must(t, pol.PutPortSet(11, []maps.PortRange{{Proto: packet.ProtoUDP, First: 30081, Last: 30081}}))
	must(t, pol.PutPeer(maps.PolicyKey{Endpoint: epA, Peer: maps.IdentityWorld, Dir: maps.DirIngress}, maps.PolicyValue{Ports: 11}, true))
	b.runCounted(t, maps.HookNIC, b.nicIdx, udpFrame(fabricMA, nicMAC, vm, 40001, nodeIP, 30081), actShot, maps.ReasonDropPolicyIngress)

	must(t, pol.PutPortSet(12, []maps.PortRange{{Proto: packet.ProtoUDP, First: 5353, Last: 5353}}))
	must(t, pol.PutPeer(maps.PolicyKey{Endpoint: epA, Peer: maps.IdentityWorld, Dir: maps.DirIngress}, maps.PolicyValue{Ports: 12}, true))
	out := b.runCounted(t, maps.HookNIC, b.nicIdx, udpFrame(fabricMA, nicMAC, vm, 40002, nodeIP, 30081), actRedirect, maps.ReasonNICToLocal)
	wantPacket(t, "query to the pod", out, vm, 40002, podA, 5353)
	out = b.runCounted(t, maps.HookPod, b.podAIdx, udpFrame(podAMAC, hostAMAC, podA, 5353, vm, 40002), actRedirect, maps.ReasonSvcRevXlate)
	wantPacket(t, "answer to the VM", out, nodeIP, 30081, vm, 40002)
}
