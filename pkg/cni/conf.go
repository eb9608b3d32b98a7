// Package cni is the podvnet CNI plugin: it creates the pod's veth pair for
// the agent, asks the agent for an endpoint over the unix socket, and
// configures the pod side. It links neither cilium/ebpf nor the map views:
// the agent owns the data path and the host veth.
package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/podvnet/podvnet/pkg/paths"
)

// NetConf is the plugin's entry in the network config list.
type NetConf struct {
	types.PluginConf
	// Socket is the agent's unix socket.
	Socket string `json:"socket,omitempty"`
	// LogFile receives the plugin's logs; stderr when empty. Never stdout,
	// which carries the CNI result.
	LogFile string `json:"logFile,omitempty"`
	// LogLevel is debug, info, warn or error (default info).
	LogLevel string `json:"logLevel,omitempty"`
	// DelQueueDir is where DEL queues the release of an endpoint when the
	// agent cannot be reached: paths.Node.DelQueueDir of the agent's state
	// dir.
	DelQueueDir string `json:"delQueueDir,omitempty"`
	// LegacyAttachments is the GC list under the name the spec first used;
	// libcni sends both.
	LegacyAttachments []types.GCAttachment `json:"cni.dev/attachments,omitempty"`
	// RuntimeConfig carries the capability arguments podvnet declares
	// ("capabilities": {"bandwidth": true} in its conflist entry).
	RuntimeConfig struct {
		Bandwidth *BandwidthLimits `json:"bandwidth,omitempty"`
	} `json:"runtimeConfig,omitempty"`
}

// BandwidthLimits are the bandwidth capability's arguments (the pod's
// kubernetes.io/ingress-bandwidth and egress-bandwidth), in bits per second.
type BandwidthLimits struct {
	IngressRate  uint64 `json:"ingressRate,omitempty"`
	IngressBurst uint64 `json:"ingressBurst,omitempty"`
	EgressRate   uint64 `json:"egressRate,omitempty"`
	EgressBurst  uint64 `json:"egressBurst,omitempty"`
}

// Shaped reports whether the runtime asked for a bandwidth limit.
func (c *NetConf) Shaped() bool {
	b := c.RuntimeConfig.Bandwidth
	return b != nil && (b.IngressRate > 0 || b.EgressRate > 0)
}

// ParseConf decodes and checks the plugin config, naming the field at fault.
func ParseConf(b []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(conf); err != nil {
		return nil, describeJSONError(err)
	}
	if conf.Name == "" {
		return nil, errors.New(`field "name": missing`)
	}
	if conf.Type == "" {
		return nil, errors.New(`field "type": missing`)
	}
	if conf.Socket == "" {
		conf.Socket = paths.DefaultSocket
	}
	if conf.DelQueueDir == "" {
		conf.DelQueueDir = paths.Default().DelQueueDir()
	}
	for _, f := range [][2]string{{"socket", conf.Socket}, {"delQueueDir", conf.DelQueueDir}, {"logFile", conf.LogFile}} {
		if f[1] != "" && !filepath.IsAbs(f[1]) {
			return nil, fmt.Errorf("field %q: %q is not an absolute path", f[0], f[1])
		}
	}
	switch conf.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		return nil, fmt.Errorf(`field "logLevel": %q, want debug, info, warn or error`, conf.LogLevel)
	}
	for i, s := range conf.DNS.Nameservers {
		if _, err := netip.ParseAddr(s); err != nil {
			return nil, fmt.Errorf(`field "dns.nameservers[%d]": %q is not an IP address`, i, s)
		}
	}
	if conf.ValidAttachments == nil {
		conf.ValidAttachments = conf.LegacyAttachments
	}
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
			return nil, fmt.Errorf(`field "prevResult": %w`, err)
		}
	}
	return conf, nil
}

// describeJSONError names the field a decode error is about.
func describeJSONError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr) && typeErr.Field != "":
		// The path names the embedded struct of the standard fields too.
		field := strings.TrimPrefix(typeErr.Field, "PluginConf.")
		return fmt.Errorf("field %q: a JSON %s, want %s", field, typeErr.Value, typeErr.Type)
	case errors.As(err, &syntaxErr):
		return fmt.Errorf("network config is not JSON: %v (at byte %d)", syntaxErr, syntaxErr.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return errors.New("network config is not JSON: it ends early")
	default:
		return fmt.Errorf("network config: %w", err)
	}
}

// K8sArgs are the CNI_ARGS a kubelet runtime passes.
type K8sArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive // names are the wire format
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive
	K8S_POD_UID                types.UnmarshallableString //nolint:revive
}

// ParseArgs parses CNI_ARGS ("K=V;K=V"). Unknown keys are accepted only with
// IgnoreUnknown=1, as the spec says.
func ParseArgs(s string) (*K8sArgs, error) {
	a := &K8sArgs{}
	if err := types.LoadArgs(s, a); err != nil {
		return nil, fmt.Errorf("CNI_ARGS: %w", err)
	}
	return a, nil
}
