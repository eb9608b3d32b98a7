package kube

import (
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
)

// Component is the source the agent's Events name.
const Component = "podvnet-agent"

// events records Events on this node through client-go's broadcaster: its
// correlator turns a repeat of an Event into a count on the first (a
// patch), and many similar ones into one, so a pod whose sandbox retries
// every few seconds against an exhausted pool leaves one Event with a
// count, not hundreds.
type events struct {
	client kubernetes.Interface
	log    *zap.Logger
	bc     record.EventBroadcaster
	rec    record.EventRecorder
	ref    *corev1.ObjectReference
}

func newEvents(cs kubernetes.Interface, node string, log *zap.Logger) *events {
	bc := record.NewBroadcaster()
	return &events{
		client: cs, log: log, bc: bc,
		rec: bc.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component, Host: node}),
		// kubelet's convention for the node's Events: the name as the UID
		// (kubectl describe node finds both conventions).
		ref: &corev1.ObjectReference{Kind: "Node", Name: node, UID: types.UID(node)},
	}
}

// start sends Events to the API server; before it, they are dropped.
func (e *events) start() {
	e.bc.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: e.client.CoreV1().Events("")})
}

func (e *events) shutdown() { e.bc.Shutdown() }

// Warn records a Warning Event on this node, e.g. reason PoolExhausted.
// It never blocks: while the API server is away, Events are retried a
// while and then dropped (the agent's log has them too).
func (c *Client) Warn(reason, message string) {
	c.events.rec.Event(c.events.ref, corev1.EventTypeWarning, reason, message)
}
