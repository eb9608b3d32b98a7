package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/podvnet/podvnet/pkg/agent"
	"github.com/podvnet/podvnet/pkg/kube"
	"github.com/podvnet/podvnet/pkg/paths"
)

// kubeFlags say how the agent reaches the Kubernetes API server, if at all.
type kubeFlags struct {
	kubeconfig, nodeName string
}

func (k *kubeFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig of the Kubernetes API server (with --node-name); empty: the in-cluster config (service account token, KUBERNETES_SERVICE_HOST/_PORT)")
	fl.StringVar(&k.nodeName, "node-name", "", "this node's Kubernetes name (the DaemonSet passes spec.nodeName); empty: static mode, no Kubernetes API")
}

// client makes the API client, or nil in static mode (no --node-name),
// which the agent says once.
func (k *kubeFlags) client(p paths.Node, m *agent.Metrics, ready *agent.Readiness, onAPI func(kube.APIStatus), log *zap.Logger) (*kube.Client, error) {
	if k.nodeName == "" {
		if k.kubeconfig != "" {
			return nil, errors.New("--kubeconfig needs --node-name: the agent watches its own node")
		}
		log.Info("static mode: no --node-name, so no Kubernetes API server: no node taint or condition, no Events, no pod labels")
		return nil, nil
	}
	kc, err := kube.New(kube.Config{
		Kubeconfig: k.kubeconfig, NodeName: k.nodeName, UserAgent: "podvnet-agent/" + version, Paths: p,
		Metrics: m.Registry,
		OnAPIStatus: func(s kube.APIStatus) {
			ready.SetDetail("apiserver", describeAPI(s))
			onAPI(s)
		},
	}, log)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client (--kubeconfig, --node-name): %w", err)
	}
	return kc, nil
}

// describeAPI is /readyz's line about the API server: nothing while it
// answers.
func describeAPI(s kube.APIStatus) string {
	if s.Up {
		return ""
	}
	last := "never"
	if !s.LastSuccess.IsZero() {
		last = s.LastSuccess.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("Kubernetes API server unreachable since %s (last answer %s): %v; CNI and forwarding go on",
		s.Since.UTC().Format(time.RFC3339), last, s.Err)
}

// networkReadyMessage is the NetworkUnavailable=False condition's message.
const networkReadyMessage = "podvnet data path, pod addresses and CNI config in place"

// reportNetwork tells the API client what the node's startup taint and
// NetworkUnavailable condition should say, on every change of the agent's
// readiness and once the CNI config is installed.
func reportNetwork(ctx context.Context, ready *agent.Readiness, installed <-chan struct{}, kc *kube.Client) {
	changed := ready.Changed()
	isInstalled := false
	for {
		kc.SetNetwork(networkStatus(ready, isInstalled))
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-installed:
			installed, isInstalled = nil, true
		}
	}
}

// networkStatus: a fault fails the node's network; an agent that is
// starting or stopping, or whose CNI config is not installed yet, leaves
// the node as it is; otherwise the network is ready.
func networkStatus(ready *agent.Readiness, installed bool) kube.NetworkStatus {
	if f := ready.Faults(); f != "" {
		return kube.NetworkStatus{State: kube.NetworkFailed, Message: f}
	}
	ok, reason := ready.Get()
	switch {
	case !ok:
		return kube.NetworkStatus{State: kube.NetworkPending, Message: reason}
	case !installed:
		return kube.NetworkStatus{State: kube.NetworkPending, Message: "installing the CNI config"}
	}
	return kube.NetworkStatus{State: kube.NetworkReady, Message: networkReadyMessage}
}
