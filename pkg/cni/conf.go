// Package cni is the podvnet CNI plugin: it creates the pod's veth, asks the
// agent for an endpoint over the unix socket, and configures the pod side.
// It links neither cilium/ebpf nor the map views: the agent owns the data path.
package cni

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// DefaultSocket is where the agent listens unless the config says otherwise.
const DefaultSocket = "/run/podvnet/agent.sock"

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
}

// ParseConf decodes and checks the plugin config, naming the field at fault.
func ParseConf(b []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(conf); err != nil {
		return nil, fmt.Errorf("parse network config: %w", err)
	}
	if conf.Name == "" {
		return nil, fmt.Errorf(`field "name": missing`)
	}
	if conf.Type == "" {
		return nil, fmt.Errorf(`field "type": missing`)
	}
	if conf.Socket == "" {
		conf.Socket = DefaultSocket
	}
	if !strings.HasPrefix(conf.Socket, "/") {
		return nil, fmt.Errorf(`field "socket": %q is not an absolute path`, conf.Socket)
	}
	switch conf.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		return nil, fmt.Errorf(`field "logLevel": %q, want debug, info, warn or error`, conf.LogLevel)
	}
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
			return nil, fmt.Errorf(`field "prevResult": %w`, err)
		}
	}
	return conf, nil
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
