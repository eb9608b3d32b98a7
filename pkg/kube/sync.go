package kube

import (
	"context"
	"fmt"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// syncKey names one view the worker rebuilds from the full store of an
// informer. Handlers enqueue keys, never objects: a burst of changes (or a
// relist after an outage) costs one rebuild, and a rebuild from the whole
// store cannot miss a delete the way applying deltas one by one can.
type syncKey string

const (
	syncNode       syncKey = "node"        // the Node view and its listeners
	syncNodeStatus syncKey = "node-status" // the startup taint and NetworkUnavailable
	syncLocalPods  syncKey = "local-pods"  // this node's pods, the pods file, listeners
)

// factory returns a new informer factory whose informers all list and
// watch with fieldSelector: one factory per scope.
func (c *Client) factory(fieldSelector string) informers.SharedInformerFactory {
	f := informers.NewSharedInformerFactoryWithOptions(c.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = fieldSelector }))
	c.factories = append(c.factories, f)
	return f
}

// watch trims what inf stores with transform, and enqueues keys on every
// change. It also tells the health check when the informer's list or watch
// fails: the first sign of an unreachable API server.
func (c *Client) watch(inf cache.SharedIndexInformer, transform cache.TransformFunc, keys ...syncKey) {
	if err := inf.SetTransform(transform); err != nil {
		panic(fmt.Sprintf("set transform before start: %v", err)) // only before Start
	}
	enqueue := func(any) {
		for _, k := range keys {
			c.queue.Add(k)
		}
	}
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	})
	inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
		c.health.watchFailed(err)
		cache.DefaultWatchErrorHandler(ctx, r, err)
	})
}

// work runs the syncs the handlers ask for, one at a time, until the queue
// shuts down. A failed sync is retried with backoff (0.5 s to 30 s).
func (c *Client) work(ctx context.Context) {
	for {
		key, shutdown := c.queue.Get()
		if shutdown {
			return
		}
		err := c.syncs[key](ctx)
		switch {
		case err == nil:
			c.queue.Forget(key)
		case ctx.Err() != nil:
		default:
			c.log.Debug("Kubernetes sync failed; retrying", zap.String("sync", string(key)), zap.Error(err))
			c.queue.AddRateLimited(key)
		}
		c.queue.Done(key)
	}
}
