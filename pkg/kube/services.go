package kube

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/podvnet/podvnet/pkg/services"
)

// ServicesHandler receives what the data path's Service maps need, from
// the cluster-wide Service, EndpointSlice and Node informers.
type ServicesHandler struct {
	// Apply takes one Service (nil: gone) with its EndpointSlices; changed
	// is when the API last changed its endpoints (zero if unknown). An
	// error makes it come again, with backoff.
	Apply func(key services.Key, svc *services.Service, slices []*services.EndpointSlice, changed time.Time) error
	// Synced is called once, when every Service the first list showed has
	// been applied.
	Synced func()
	// NodeIPs takes every node's IPv4 addresses (NodePorts answer on each).
	NodeIPs func([]netip.Addr) error
}

// serviceLabel names an EndpointSlice's Service.
const serviceLabel = discoveryv1.LabelServiceName

// sliceIndex indexes EndpointSlices by their Service's key.
const sliceIndex = "service"

// servicesWatch is the cluster-wide watch of Services, EndpointSlices and
// Nodes. Unlike the node-scoped views, a change is applied per Service
// (one key on its own queue, its Service and slices read from the stores):
// with thousands of Services, rebuilding all of them for one endpoint
// would put seconds between the API and the data path.
type servicesWatch struct {
	h      ServicesHandler
	svcs   cache.SharedIndexInformer
	slices cache.SharedIndexInformer
	nodes  cache.SharedIndexInformer
	queue  workqueue.TypedRateLimitingInterface[services.Key]
	nodesQ chan struct{}

	mu      sync.Mutex
	pending map[services.Key]bool // the first list's keys not applied yet; nil once synced
}

// WatchServices makes the client watch every Service, EndpointSlice and
// Node for h. Register before Start.
func (c *Client) WatchServices(h ServicesHandler) {
	f := c.factory("")
	w := &servicesWatch{h: h,
		svcs:   f.Core().V1().Services().Informer(),
		slices: f.Discovery().V1().EndpointSlices().Informer(),
		nodes:  f.Core().V1().Nodes().Informer(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[services.Key](50*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[services.Key]{Name: "podvnet-services"}),
		nodesQ: make(chan struct{}, 1),
	}
	must := func(err error) {
		if err != nil {
			panic(fmt.Sprintf("configure an informer before start: %v", err)) // only before Start
		}
	}
	must(w.svcs.SetTransform(trimService))
	must(w.slices.SetTransform(trimSlice))
	must(w.nodes.SetTransform(trimNodeAddresses))
	must(w.slices.AddIndexers(cache.Indexers{sliceIndex: func(obj any) ([]string, error) {
		s, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok || s.Labels[serviceLabel] == "" {
			return nil, nil
		}
		return []string{s.Namespace + "/" + s.Labels[serviceLabel]}, nil
	}}))
	enqueueSvc := func(obj any) {
		if k, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			ns, name, _ := cache.SplitMetaNamespaceKey(k)
			w.queue.Add(services.Key{Namespace: ns, Name: name})
		}
	}
	enqueueSlice := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if s, ok := obj.(*discoveryv1.EndpointSlice); ok && s.Labels[serviceLabel] != "" {
			w.queue.Add(services.Key{Namespace: s.Namespace, Name: s.Labels[serviceLabel]})
		}
	}
	nodesChanged := func(any) {
		select {
		case w.nodesQ <- struct{}{}:
		default:
		}
	}
	for inf, handler := range map[cache.SharedIndexInformer]cache.ResourceEventHandlerFuncs{
		w.svcs: {AddFunc: enqueueSvc, UpdateFunc: func(_, n any) { enqueueSvc(n) }, DeleteFunc: enqueueSvc},
		// An update may move a slice to another Service: both are synced.
		w.slices: {AddFunc: enqueueSlice, UpdateFunc: func(o, n any) { enqueueSlice(o); enqueueSlice(n) }, DeleteFunc: enqueueSlice},
		w.nodes:  {AddFunc: nodesChanged, UpdateFunc: func(_, n any) { nodesChanged(n) }, DeleteFunc: nodesChanged},
	} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			panic(fmt.Sprintf("add an event handler before start: %v", err))
		}
		inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
			c.health.watchFailed(err)
			cache.DefaultWatchErrorHandler(ctx, r, err)
		})
	}
	c.afterStart = append(c.afterStart, func(ctx context.Context) { w.run(ctx, c.log) })
}

// run applies Services until ctx ends; Start calls it.
func (w *servicesWatch) run(ctx context.Context, log *zap.Logger) {
	go func() {
		<-ctx.Done()
		w.queue.ShutDown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), w.svcs.HasSynced, w.slices.HasSynced, w.nodes.HasSynced) {
		return
	}
	// What the first list showed: once each is applied, the rest of what
	// an earlier agent pinned can go.
	w.mu.Lock()
	w.pending = map[services.Key]bool{}
	for _, k := range w.svcs.GetStore().ListKeys() {
		ns, name, _ := cache.SplitMetaNamespaceKey(k)
		w.pending[services.Key{Namespace: ns, Name: name}] = true
		w.queue.Add(services.Key{Namespace: ns, Name: name})
	}
	w.mu.Unlock()
	log.Info("Kubernetes Services listed", zap.Int("services", len(w.pending)), zap.Int("endpoint_slices", len(w.slices.GetStore().ListKeys())))
	w.doneWith(services.Key{}) // no Service at all: synced at once
	go w.syncNodes(ctx, log)
	for {
		key, shutdown := w.queue.Get()
		if shutdown {
			return
		}
		err := w.apply(key)
		switch {
		case err == nil:
			w.queue.Forget(key)
			w.doneWith(key)
		case ctx.Err() != nil:
		default:
			log.Warn("apply a Service to the data path; retrying", zap.String("service", key.String()), zap.Error(err))
			w.queue.AddRateLimited(key)
		}
		w.queue.Done(key)
	}
}

// doneWith marks key applied, and reports Synced when the first list is.
func (w *servicesWatch) doneWith(key services.Key) {
	w.mu.Lock()
	if w.pending == nil {
		w.mu.Unlock()
		return
	}
	delete(w.pending, key)
	synced := len(w.pending) == 0
	if synced {
		w.pending = nil
	}
	w.mu.Unlock()
	if synced && w.h.Synced != nil {
		w.h.Synced()
	}
}

// apply reads one Service and its slices from the stores and hands them on.
func (w *servicesWatch) apply(key services.Key) error {
	obj, exists, err := w.svcs.GetStore().GetByKey(key.Namespace + "/" + key.Name)
	if err != nil {
		return err
	}
	var svc *services.Service
	if exists {
		svc = serviceOf(obj.(*corev1.Service))
	}
	objs, err := w.slices.GetIndexer().ByIndex(sliceIndex, key.Namespace+"/"+key.Name)
	if err != nil {
		return err
	}
	var eps []*services.EndpointSlice
	var changed time.Time
	for _, o := range objs {
		s := o.(*discoveryv1.EndpointSlice)
		if s.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		eps = append(eps, sliceOf(s))
		if t, err := time.Parse(time.RFC3339Nano, s.Annotations[corev1.EndpointsLastChangeTriggerTime]); err == nil && t.After(changed) {
			changed = t
		}
	}
	slices.SortFunc(eps, func(a, b *services.EndpointSlice) int { return compareStrings(a.Name, b.Name) })
	return w.h.Apply(key, svc, eps, changed)
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// syncNodes hands on every node's addresses whenever a Node changes.
func (w *servicesWatch) syncNodes(ctx context.Context, log *zap.Logger) {
	for {
		var ips []netip.Addr
		for _, o := range w.nodes.GetStore().List() {
			for _, a := range o.(*corev1.Node).Status.Addresses {
				if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Is4() {
					ips = append(ips, ip)
				}
			}
		}
		if w.h.NodeIPs != nil {
			if err := w.h.NodeIPs(ips); err != nil {
				log.Warn("write the nodes' addresses", zap.Error(err))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-w.nodesQ:
		}
	}
}

// serviceOf is what the data path needs of a Service (kube-proxy's
// reading of it, pkg/proxy/serviceport.go).
func serviceOf(s *corev1.Service) *services.Service {
	if s.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	out := &services.Service{Key: services.Key{Namespace: s.Namespace, Name: s.Name},
		InternalLocal: s.Spec.InternalTrafficPolicy != nil && *s.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal,
	}
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 && s.Spec.ClusterIP != "" {
		ips = []string{s.Spec.ClusterIP}
	}
	out.ClusterIPs = parseIPs(ips)
	out.ExternalIPs = parseIPs(s.Spec.ExternalIPs)
	if s.Spec.Type == corev1.ServiceTypeLoadBalancer {
		for _, in := range s.Status.LoadBalancer.Ingress {
			out.LoadBalancerIPs = append(out.LoadBalancerIPs, parseIPs([]string{in.IP})...)
		}
	}
	// Local applies where traffic comes from outside (apiservice
	// ExternallyAccessible): NodePorts, load balancers, externalIPs.
	external := s.Spec.Type == corev1.ServiceTypeNodePort || s.Spec.Type == corev1.ServiceTypeLoadBalancer || len(out.ExternalIPs) > 0
	out.ExternalLocal = external && s.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
	if out.ExternalLocal {
		out.HealthCheckNodePort = uint16(s.Spec.HealthCheckNodePort)
	}
	if s.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		out.AffinityTimeout = uint32(corev1.DefaultClientIPServiceAffinitySeconds)
		if c := s.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			out.AffinityTimeout = uint32(*c.ClientIP.TimeoutSeconds)
		}
	}
	for _, p := range s.Spec.Ports {
		sp := services.Port{Name: p.Name, Proto: protocol(p.Protocol), Port: uint16(p.Port), NodePort: uint16(p.NodePort)}
		if p.TargetPort.StrVal != "" {
			sp.TargetPortName = p.TargetPort.StrVal
		} else {
			sp.TargetPort = uint16(p.TargetPort.IntVal)
		}
		if sp.TargetPort == 0 && sp.TargetPortName == "" {
			sp.TargetPort = sp.Port // the API's default
		}
		out.Ports = append(out.Ports, sp)
	}
	return out
}

// sliceOf is what the data path needs of an EndpointSlice, conditions
// read as the API defines them: ready and serving absent mean true,
// terminating absent false.
func sliceOf(s *discoveryv1.EndpointSlice) *services.EndpointSlice {
	out := &services.EndpointSlice{Namespace: s.Namespace, Name: s.Name, Service: s.Labels[serviceLabel]}
	for _, p := range s.Ports {
		if p.Port == nil {
			continue
		}
		ep := services.EndpointPort{Proto: services.TCP, Port: uint16(*p.Port)}
		if p.Name != nil {
			ep.Name = *p.Name
		}
		if p.Protocol != nil {
			ep.Proto = protocol(*p.Protocol)
		}
		out.Ports = append(out.Ports, ep)
	}
	for _, e := range s.Endpoints {
		c := e.Conditions
		ep := services.Endpoint{Addrs: parseIPs(e.Addresses),
			Ready:       c.Ready == nil || *c.Ready,
			Serving:     c.Serving == nil || *c.Serving,
			Terminating: c.Terminating != nil && *c.Terminating,
		}
		if e.NodeName != nil {
			ep.Node = *e.NodeName
		}
		out.Endpoints = append(out.Endpoints, ep)
	}
	return out
}

func parseIPs(ss []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		if ip, err := netip.ParseAddr(s); err == nil {
			out = append(out, ip)
		}
	}
	return out
}

// trimService keeps of a Service what serviceOf reads.
func trimService(obj any) (any, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	out := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, UID: s.UID, ResourceVersion: s.ResourceVersion},
		Spec: corev1.ServiceSpec{Type: s.Spec.Type, ClusterIP: s.Spec.ClusterIP, ClusterIPs: s.Spec.ClusterIPs, ExternalIPs: s.Spec.ExternalIPs,
			Ports: s.Spec.Ports, ExternalTrafficPolicy: s.Spec.ExternalTrafficPolicy, InternalTrafficPolicy: s.Spec.InternalTrafficPolicy,
			HealthCheckNodePort: s.Spec.HealthCheckNodePort, SessionAffinity: s.Spec.SessionAffinity, SessionAffinityConfig: s.Spec.SessionAffinityConfig},
	}
	if s.Spec.Type == corev1.ServiceTypeLoadBalancer {
		for _, in := range s.Status.LoadBalancer.Ingress {
			out.Status.LoadBalancer.Ingress = append(out.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: in.IP})
		}
	}
	return out, nil
}

// trimSlice keeps of an EndpointSlice what sliceOf reads, its Service
// label and the last change's time.
func trimSlice(obj any) (any, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return obj, nil
	}
	out := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, UID: s.UID, ResourceVersion: s.ResourceVersion,
			Labels: map[string]string{serviceLabel: s.Labels[serviceLabel]}},
		AddressType: s.AddressType, Ports: s.Ports,
	}
	if t, ok := s.Annotations[corev1.EndpointsLastChangeTriggerTime]; ok {
		out.Annotations = map[string]string{corev1.EndpointsLastChangeTriggerTime: t}
	}
	for _, e := range s.Endpoints {
		out.Endpoints = append(out.Endpoints, discoveryv1.Endpoint{Addresses: e.Addresses, Conditions: e.Conditions, NodeName: e.NodeName})
	}
	return out, nil
}

// trimNodeAddresses keeps of every Node its name and internal and external
// addresses.
func trimNodeAddresses(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	out := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion}}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP {
			out.Status.Addresses = append(out.Status.Addresses, a)
		}
	}
	return out, nil
}
