// Package agentapi is the contract between the CNI plugin and the agent: the
// versioned request and response types of the agent's unix-socket API, the
// client the plugin uses, the queue of releases the plugin leaves when the
// agent is down, and the host veth naming both sides rely on.
package agentapi

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
)

// API paths. The version is in the path so a newer agent can serve old
// plugins during a rolling upgrade.
const (
	PathIndex     = "/v1"                 // GET: the paths this agent serves
	PathEndpoints = "/v1/endpoints"       // POST: ADD; DELETE: DEL
	PathCheck     = "/v1/endpoints/check" // POST: CHECK
	PathGC        = "/v1/gc"              // POST: GC
	PathStatus    = "/v1/status"          // GET: STATUS
)

// MaxBodyBytes bounds every request body the agent reads. A GC listing 250
// pods (Azure's per-node maximum) takes about 25 KiB.
const MaxBodyBytes = 64 << 10

// HostVethPrefix starts every host-side veth name podvnet creates.
const HostVethPrefix = "pv"

// hostVethName matches the names HostVethName makes, and nothing else.
var hostVethName = regexp.MustCompile(`^` + HostVethPrefix + `[0-9a-f]{12}$`)

// IsHostVethName reports whether name is one HostVethName makes: reconcile,
// GC and cleanup must never touch an interface podvnet did not create.
func IsHostVethName(name string) bool { return hostVethName.MatchString(name) }

// HostVethName is the host-side veth name of a pod attachment: "pv" and 12
// hex digits of a hash of the container ID and ifname, 14 characters (Linux
// allows 15). Deterministic, so DEL finds the veth without any state.
func HostVethName(containerID, ifname string) string {
	h := sha256.Sum256([]byte(containerID + "/" + ifname))
	return HostVethPrefix + hex.EncodeToString(h[:])[:12]
}

// GatewayIP is the pods' default gateway: a link-local address no network
// uses, answered by a permanent neighbour entry for the host veth's MAC.
const GatewayIP = "169.254.1.1"

// AddRequest asks the agent to wire up an endpoint whose veth the plugin
// created.
type AddRequest struct {
	Network      string `json:"network"`
	ContainerID  string `json:"container_id"`
	IfName       string `json:"ifname"`
	Netns        string `json:"netns"`
	HostIfName   string `json:"host_ifname"`
	PodMAC       string `json:"pod_mac"`
	PodNamespace string `json:"pod_namespace,omitempty"`
	PodName      string `json:"pod_name,omitempty"`
	PodUID       string `json:"pod_uid,omitempty"`
	// Shaped says tc shapes the pod's traffic on its host veth (the
	// bandwidth plugin, chained after podvnet): the programs must leave
	// that traffic on the kernel path, where the qdiscs are.
	Shaped bool `json:"shaped,omitempty"`
}

// AddResponse is what the plugin configures in the pod.
type AddResponse struct {
	IP      string `json:"ip"`      // CIDR, a /32
	Gateway string `json:"gateway"` // GatewayIP
	HostMAC string `json:"host_mac"`
	MTU     int    `json:"mtu"`
}

// DelRequest asks the agent to release an endpoint. It succeeds for unknown
// endpoints.
type DelRequest struct {
	Network     string `json:"network"`
	ContainerID string `json:"container_id"`
	IfName      string `json:"ifname"`
}

// CheckRequest asks the agent to verify its side of an endpoint: the
// allocation, host veth, map entry, /32 route and from_pod attachment.
type CheckRequest struct {
	Network     string `json:"network"`
	ContainerID string `json:"container_id"`
	IfName      string `json:"ifname"`
	// IP is the address the ADD result gave the pod (an address or a
	// CIDR); empty skips comparing it with the allocation.
	IP string `json:"ip,omitempty"`
}

// CheckResponse lists what is wrong; no problems means the agent's side is
// as ADD left it.
type CheckResponse struct {
	IP       string   `json:"ip,omitempty"` // the allocated address, a /32
	Problems []string `json:"problems"`
}

// Attachment is one (container ID, ifname) a runtime still uses.
type Attachment struct {
	ContainerID string `json:"container_id"`
	IfName      string `json:"ifname"`
}

// GCRequest asks the agent to release every endpoint of the network that is
// not in Valid, and whatever podvnet left that belongs to no endpoint.
type GCRequest struct {
	Network string       `json:"network"`
	Valid   []Attachment `json:"valid"`
}

// Released is one endpoint GC released.
type Released struct {
	IP          string `json:"ip"`
	ContainerID string `json:"container_id"`
	IfName      string `json:"ifname"`
}

// GCResponse says what GC removed.
type GCResponse struct {
	Released     []Released `json:"released"`
	StrayVeths   int        `json:"stray_veths"`
	StrayEntries int        `json:"stray_map_entries"`
	StrayPins    int        `json:"stray_link_pins"`
}

// Status is the agent's readiness and pool state.
type Status struct {
	Ready     bool   `json:"ready"`
	Reason    string `json:"reason,omitempty"`
	Limit     int    `json:"limit"`
	Allocated int    `json:"allocated"`
	Free      int    `json:"free"`
}

// Error codes in an ErrorResponse.
const (
	CodeBadRequest    = "bad_request"
	CodeNotFound      = "not_found"
	CodePoolExhausted = "pool_exhausted"
	CodeNotReady      = "not_ready"
	CodeInternal      = "internal"
	// CodePolicyUnknown: the pod's NetworkPolicy is not known yet (no API
	// server since the agent started) and unknown policy is denied.
	CodePolicyUnknown = "policy_unknown"
)

// ErrorResponse is the body of every non-2xx answer.
type ErrorResponse struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}
