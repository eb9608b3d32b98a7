// Package kube is the agent's client of the Kubernetes API server, and the
// only package of podvnet that imports client-go or the API types. It owns
// the clients, one shared informer factory per scope (the node's own Node,
// the node's Pods; cluster-wide ones come with the features that need
// them), transforms that keep only the fields podvnet reads, handlers that
// only enqueue, and one worker that recomputes each view from its
// informer's full store. The rest of the agent sees plain Go values: Pod,
// Node, NetworkStatus, and Warn for Events on the Node.
//
// Nothing here is on the CNI or data path: the agent serves pods and
// forwards packets whether or not the API server answers. What the API
// server did not see while it was away (pods deleted, labels changed) the
// informers catch up on when it returns, and every view is rebuilt from the
// complete store, so no delete is missed.
package kube

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/connrotation"
	"k8s.io/client-go/util/workqueue"

	"github.com/podvnet/podvnet/pkg/paths"
)

// Config says how to reach the API server and which node this is.
type Config struct {
	// Kubeconfig is a kubeconfig file; empty: the in-cluster config (the
	// pod's service account token, KUBERNETES_SERVICE_HOST and _PORT).
	Kubeconfig string
	// NodeName is the node the agent runs on (the DaemonSet passes
	// spec.nodeName from the downward API).
	NodeName string
	// UserAgent names the agent in the API server's logs and audit.
	UserAgent string
	// Paths locate the pods file (Paths.PodsFile); empty StateDir: none
	// is written.
	Paths paths.Node
	// Metrics, when set, receives the API server's reachability.
	Metrics prometheus.Registerer
	// OnAPIStatus, when set, is called when the API server becomes
	// unreachable or reachable again.
	OnAPIStatus func(APIStatus)
}

// Client is the agent's connection to the API server: informers, the views
// built from them, the node's status and its Events. Make one with New,
// register listeners, then Start it.
type Client struct {
	cfg    Config
	log    *zap.Logger
	client kubernetes.Interface
	dialer *connrotation.Dialer // nil with a fake clientset

	// One factory per scope: a scope is a field selector, and an informer
	// serves exactly one.
	factories []informers.SharedInformerFactory
	nodes     cache.SharedIndexInformer // this node's Node
	pods      cache.SharedIndexInformer // this node's Pods

	queue workqueue.TypedRateLimitingInterface[syncKey]
	syncs map[syncKey]func(context.Context) error

	events *events
	health *health

	mu      sync.Mutex
	network NetworkStatus
	node    *Node
	local   []Pod
	byIP    map[netip.Addr]Pod // pods with an address of their own
	// podsFileStale: the pods file does not show local yet.
	podsFileStale bool
	onNode        []func(Node)
	onPods        []func([]Pod)
	// policy is NetworkPolicy's cluster-wide view (policy.go); nil until a
	// listener asks for it.
	policy *policyInformers
	// afterStart run in their own goroutines once Start has started the
	// informers.
	afterStart []func(context.Context)
	started    bool
	stopOnce   sync.Once
	stop       chan struct{}
	done       chan struct{}
}

// New builds the client from cfg. It does not contact the API server.
func New(cfg Config, log *zap.Logger) (*Client, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("no node name")
	}
	rc, err := restConfig(cfg.Kubeconfig)
	if err != nil {
		return nil, err
	}
	rc.UserAgent = cfg.UserAgent
	// Protobuf costs the API server and the agent less than JSON to encode,
	// decode and hold.
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	rc.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	// Connections the agent can close at once when the node's NIC goes or
	// comes back: the old ones are dead, and HTTP/2's health check would
	// only find out after 45 s.
	dialer := connrotation.NewDialer((&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext)
	rc.Dial = dialer.DialContext
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for %s: %w", rc.Host, err)
	}
	routeKlog(log)
	c := newClient(cfg, cs, readyz(cs), log)
	c.dialer = dialer
	return c, nil
}

// restConfig loads the kubeconfig file, or the in-cluster config.
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
		}
		return rc, nil
	}
	rc, err := rest.InClusterConfig()
	if errors.Is(err, rest.ErrNotInCluster) {
		return nil, errors.New("no kubeconfig, and no in-cluster config: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set")
	}
	if err != nil {
		return nil, fmt.Errorf("in-cluster config: %w", err)
	}
	return rc, nil
}

// newClient wires informers, handlers and the worker around a clientset
// (New's, or a fake one in tests).
func newClient(cfg Config, cs kubernetes.Interface, ping func(context.Context) error, log *zap.Logger) *Client {
	c := &Client{
		cfg: cfg, log: log, client: cs,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[syncKey](500*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[syncKey]{Name: "podvnet"}),
		byIP: map[netip.Addr]Pod{},
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	c.events = newEvents(cs, cfg.NodeName, log)
	c.health = newHealth(ping, cfg.Metrics, cfg.OnAPIStatus, log)

	nodeScope := c.factory("metadata.name=" + cfg.NodeName)
	c.nodes = nodeScope.Core().V1().Nodes().Informer()
	podScope := c.factory("spec.nodeName=" + cfg.NodeName)
	c.pods = podScope.Core().V1().Pods().Informer()
	c.syncs = map[syncKey]func(context.Context) error{
		syncNode:       c.syncNode,
		syncNodeStatus: c.syncNodeStatus,
		syncLocalPods:  c.syncLocalPods,
	}
	c.watch(c.nodes, trimNode, syncNode, syncNodeStatus)
	c.watch(c.pods, trimPod, syncLocalPods)
	return c
}

// Clientset is the typed client, for what the views do not cover.
func (c *Client) Clientset() kubernetes.Interface { return c.client }

// OnNode registers f, called from the worker with the node whenever what
// the agent reads of it changes. Register before Start.
func (c *Client) OnNode(f func(Node)) { c.onNode = append(c.onNode, f) }

// OnLocalPods registers f, called from the worker with every pod of this
// node whenever what the agent reads of them changes. Register before
// Start.
func (c *Client) OnLocalPods(f func([]Pod)) { c.onPods = append(c.onPods, f) }

// Start starts the informers, the API server's health check and the
// worker, and returns at once: nothing of the agent waits for the API
// server. The views fill once the informers have synced.
func (c *Client) Start(ctx context.Context) {
	c.mu.Lock()
	c.started = true
	c.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		<-c.stop
		cancel()
	}()
	c.events.start()
	for _, f := range c.factories {
		f.Start(ctx.Done())
	}
	go c.health.run(ctx)
	for _, f := range c.afterStart {
		go f(ctx)
	}
	go func() {
		// A view built from a store that has not listed yet would call
		// every pod gone: the first syncs wait for all of them.
		if cache.WaitForCacheSync(ctx.Done(), c.nodes.HasSynced, c.pods.HasSynced) {
			c.log.Info("Kubernetes API synced", zap.String("node", c.cfg.NodeName))
			for k := range c.syncs {
				c.queue.Add(k)
			}
		}
	}()
	go func() {
		defer close(c.done)
		c.work(ctx)
	}()
}

// Close stops the worker, the informers and the event recorder.
func (c *Client) Close() {
	c.stopOnce.Do(func() {
		close(c.stop)
		c.queue.ShutDown()
		c.mu.Lock()
		started := c.started
		c.mu.Unlock()
		if started {
			<-c.done
		}
		for _, f := range c.factories {
			f.Shutdown()
		}
		c.events.shutdown()
	})
}

// CloseConnections drops every connection to the API server; requests
// open new ones. The agent calls it when the node's NIC disappears or
// comes back, which kills connections without a word.
func (c *Client) CloseConnections() {
	if c.dialer != nil {
		c.dialer.CloseAll()
	}
}

// APIStatus reports whether the API server answers.
func (c *Client) APIStatus() APIStatus { return c.health.status() }
