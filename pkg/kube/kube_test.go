package kube

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/podvnet/podvnet/pkg/paths"
	"github.com/podvnet/podvnet/pkg/policy"
	"github.com/podvnet/podvnet/pkg/services"
)

const nodeName = "node1"

func node(taints ...corev1.Taint) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: nodeName, UID: "node-uid", ResourceVersion: "1",
			Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "0"}, Labels: map[string]string{"kubernetes.io/hostname": nodeName}},
		Spec: corev1.NodeSpec{Taints: taints, PodCIDR: "10.1.0.0/24"},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{corev1.ResourcePods: resource.MustParse("110"), corev1.ResourceCPU: resource.MustParse("2")},
			Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady"}},
			Images:      []corev1.ContainerImage{{Names: []string{"registry.k8s.io/pause:3.10"}, SizeBytes: 1 << 20}},
		},
	}
}

var kubeletTaint = corev1.Taint{Key: NotReadyTaint, Effect: corev1.TaintEffectNoSchedule}

type podOpt func(*corev1.Pod)

func pod(name, ip string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name),
			Labels: map[string]string{"app": "web"}, Annotations: map[string]string{"big": strings.Repeat("x", 1000)},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationUpdate}}},
		Spec: corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{
			Name: "web", Image: "web:1", Command: []string{"serve"},
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}, {ContainerPort: 9090}},
			Env:   []corev1.EnvVar{{Name: "A", Value: strings.Repeat("y", 1000)}},
		}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func onNode(n string) podOpt          { return func(p *corev1.Pod) { p.Spec.NodeName = n } }
func hostNetwork() podOpt             { return func(p *corev1.Pod) { p.Spec.HostNetwork = true } }
func phase(ph corev1.PodPhase) podOpt { return func(p *corev1.Pod) { p.Status.Phase = ph } }

// start runs a client on a fake clientset holding objs.
func start(t *testing.T, cs *fake.Clientset, cfg Config) *Client {
	t.Helper()
	cfg.NodeName = nodeName
	c := newClient(cfg, cs, nil, zaptest.NewLogger(t))
	return c
}

func run(t *testing.T, c *Client) {
	t.Helper()
	c.Start(context.Background())
	t.Cleanup(c.Close)
}

// waitFor polls cond until it holds; the timeout only bounds a failure.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
	}
}

func TestTrimPodKeepsWhatTheViewsRead(t *testing.T) {
	out, err := trimPod(pod("a", "10.240.0.5"))
	if err != nil {
		t.Fatal(err)
	}
	p := out.(*corev1.Pod)
	if p.Annotations != nil || p.ManagedFields != nil || p.Status.Conditions != nil || p.Status.PodIPs != nil {
		t.Errorf("trimmed pod keeps annotations, managed fields or status it does not need: %+v", p)
	}
	if len(p.Spec.Containers) != 1 || p.Spec.Containers[0].Image != "" || p.Spec.Containers[0].Env != nil ||
		!slices.Equal(p.Spec.Containers[0].Ports, []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}) {
		t.Errorf("containers %+v: want only the named port", p.Spec.Containers)
	}
	got := podOf(p)
	want := Pod{Namespace: "default", Name: "a", UID: "uid-a", Node: nodeName, IP: netip.MustParseAddr("10.240.0.5"),
		Labels: map[string]string{"app": "web"}, Ports: map[string]Port{"http": {Port: 8080, Protocol: "TCP"}}}
	if !podEqual(got, want) {
		t.Errorf("view of the trimmed pod %+v, want %+v", got, want)
	}
	if tomb, _ := trimPod("not a pod"); tomb != "not a pod" {
		t.Error("a tombstone must pass unchanged")
	}
}

func TestTrimNodeKeepsWhatTheViewsRead(t *testing.T) {
	out, _ := trimNode(node(kubeletTaint))
	n := out.(*corev1.Node)
	if n.Annotations != nil || n.Labels != nil || n.Spec.PodCIDR != "" || n.Status.Images != nil || len(n.Status.Allocatable) != 1 {
		t.Errorf("trimmed node keeps what it does not need: %+v", n)
	}
	v := nodeOf(n)
	if v.AllocatablePods != 110 || !v.HasTaint(NotReadyTaint, "NoSchedule") {
		t.Errorf("node view %+v", v)
	}
	if c, ok := v.Condition("Ready"); !ok || c.Status != "True" {
		t.Errorf("Ready condition %+v %v", c, ok)
	}
}

// TestLocalPods: the view holds this node's pods with names, UIDs, labels
// and ports; PodByIP finds only pods with an address of their own; the
// pods file follows the view; listeners hear of changes.
func TestLocalPods(t *testing.T) {
	dir := t.TempDir()
	cs := fake.NewClientset(node(), pod("a", "10.240.0.5"), pod("b", "10.240.0.6"),
		pod("host", "10.240.0.4", hostNetwork()), pod("done", "10.240.0.7", phase(corev1.PodSucceeded)),
		// The fake ignores field selectors: the view must not.
		pod("elsewhere", "10.240.0.40", onNode("node2")))
	c := start(t, cs, Config{Paths: paths.Node{StateDir: dir}})
	var mu sync.Mutex
	var heard [][]Pod
	c.OnLocalPods(func(p []Pod) { mu.Lock(); heard = append(heard, p); mu.Unlock() })
	run(t, c)
	waitFor(t, "pods view", func() bool { return len(c.LocalPods()) == 4 })

	names := func(ps []Pod) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Name)
		}
		return out
	}
	if got := names(c.LocalPods()); !slices.Equal(got, []string{"a", "b", "done", "host"}) {
		t.Errorf("local pods %v", got)
	}
	for ip, want := range map[string]string{"10.240.0.5": "a", "10.240.0.6": "b", "10.240.0.4": "", "10.240.0.7": "", "10.240.0.40": ""} {
		p, ok := c.PodByIP(netip.MustParseAddr(ip))
		if want == "" && ok || want != "" && (!ok || p.Name != want || p.UID != "uid-"+want || p.Labels["app"] != "web") {
			t.Errorf("PodByIP(%s) = %+v, %v; want %q", ip, p, ok, want)
		}
	}
	// The view changes before the worker writes the file: wait for it.
	var f *PodsFile
	waitFor(t, "pods file", func() bool {
		var err error
		f, err = ReadPodsFile(paths.Node{StateDir: dir})
		return err == nil && len(f.Pods) == 4
	})
	if f.Node != nodeName || !slices.Equal(names(f.Pods), []string{"a", "b", "done", "host"}) || f.Pods[0].Ports["http"].Port != 8080 {
		t.Errorf("pods file %+v", f)
	}

	ctx := context.Background()
	b := pod("b", "10.240.0.6")
	b.Labels = map[string]string{"app": "web", "tier": "front"}
	if _, err := cs.CoreV1().Pods("default").Update(ctx, b, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cs.CoreV1().Pods("default").Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "label change and delete", func() bool {
		p, ok := c.PodByIP(netip.MustParseAddr("10.240.0.6"))
		_, gone := c.PodByIP(netip.MustParseAddr("10.240.0.5"))
		return ok && p.Labels["tier"] == "front" && !gone
	})
	waitFor(t, "pods file", func() bool {
		f, err := ReadPodsFile(paths.Node{StateDir: dir})
		return err == nil && len(f.Pods) == 3 && f.Pods[0].Labels["tier"] == "front"
	})
	mu.Lock()
	defer mu.Unlock()
	if len(heard) < 2 || len(heard[len(heard)-1]) != 3 {
		t.Errorf("listeners heard %d changes, last %v", len(heard), heard[len(heard)-1])
	}
}

// TestDeleteMissedByTheWatch: a pod deleted while the watch was down
// (no delete event ever arrives) leaves the view once the informer relists,
// because the view is rebuilt from the full store.
func TestDeleteMissedByTheWatch(t *testing.T) {
	cs := fake.NewClientset(node())
	var mu sync.Mutex
	list := []corev1.Pod{*pod("a", "10.240.0.5"), *pod("b", "10.240.0.6")}
	watchers := make(chan *watch.FakeWatcher, 10)
	cs.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		return true, &corev1.PodList{ListMeta: metav1.ListMeta{ResourceVersion: "10"}, Items: slices.Clone(list)}, nil
	})
	cs.PrependWatchReactor("pods", func(k8stesting.Action) (bool, watch.Interface, error) {
		w := watch.NewFake()
		watchers <- w
		return true, w, nil
	})
	c := start(t, cs, Config{})
	run(t, c)
	waitFor(t, "two pods", func() bool { return len(c.LocalPods()) == 2 })
	w := <-watchers

	// b is deleted while the API server is away: the watch ends, and the
	// next list no longer has it.
	mu.Lock()
	list = list[:1]
	mu.Unlock()
	w.Stop()
	waitFor(t, "b gone after the relist", func() bool {
		_, ok := c.PodByIP(netip.MustParseAddr("10.240.0.6"))
		return !ok && len(c.LocalPods()) == 1
	})
}

func nodeNow(t *testing.T, cs *fake.Clientset) *corev1.Node {
	t.Helper()
	n, err := cs.CoreV1().Nodes().Get(context.Background(), nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func hasNotReadyTaint(n *corev1.Node) bool {
	return slices.ContainsFunc(n.Spec.Taints, isNotReadyTaint)
}

func networkUnavailable(n *corev1.Node) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeNetworkUnavailable {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// TestNodeStatus: starting, the agent leaves kubelet's taint alone; ready,
// it removes it and sets NetworkUnavailable False; failed, it puts the
// taint back and sets the condition True with the cause; recovered, it
// clears both. Other taints and conditions are untouched.
func TestNodeStatus(t *testing.T) {
	other := corev1.Taint{Key: "dedicated", Value: "infra", Effect: corev1.TaintEffectNoSchedule}
	cs := fake.NewClientset(node(kubeletTaint, other))
	c := start(t, cs, Config{})
	run(t, c)
	c.SetNetwork(NetworkStatus{State: NetworkPending, Message: "loading the data path"})
	waitFor(t, "node view", func() bool { _, ok := c.Node(); return ok })
	for _, a := range cs.Actions() {
		if a.GetVerb() == "patch" {
			t.Fatalf("patched the node while starting: %v", a)
		}
	}

	c.SetNetwork(NetworkStatus{State: NetworkReady, Message: "data path, pool and CNI config in place"})
	waitFor(t, "taint removed, NetworkUnavailable False", func() bool {
		n := nodeNow(t, cs)
		cond := networkUnavailable(n)
		return !hasNotReadyTaint(n) && cond != nil && cond.Status == corev1.ConditionFalse && cond.Reason == ReasonReady
	})
	n := nodeNow(t, cs)
	if !slices.Contains(n.Spec.Taints, other) || len(n.Status.Conditions) != 2 {
		t.Errorf("other taints or conditions changed: %+v %+v", n.Spec.Taints, n.Status.Conditions)
	}
	readySince := networkUnavailable(n).LastTransitionTime

	c.SetNetwork(NetworkStatus{State: NetworkFailed, Message: "NIC eth0 is gone"})
	waitFor(t, "taint back, NetworkUnavailable True", func() bool {
		n := nodeNow(t, cs)
		cond := networkUnavailable(n)
		return hasNotReadyTaint(n) && cond != nil && cond.Status == corev1.ConditionTrue && cond.Reason == ReasonNotReady &&
			cond.Message == "NIC eth0 is gone"
	})
	c.SetNetwork(NetworkStatus{State: NetworkFailed, Message: "NIC eth0 is gone; the pool lost"})
	waitFor(t, "message updated", func() bool {
		return networkUnavailable(nodeNow(t, cs)).Message == "NIC eth0 is gone; the pool lost"
	})
	c.SetNetwork(NetworkStatus{State: NetworkReady, Message: "data path, pool and CNI config in place"})
	waitFor(t, "cleared again", func() bool {
		n := nodeNow(t, cs)
		cond := networkUnavailable(n)
		return !hasNotReadyTaint(n) && cond.Status == corev1.ConditionFalse
	})
	if got := networkUnavailable(nodeNow(t, cs)).LastTransitionTime; !got.After(readySince.Time) && !got.Equal(&readySince) {
		t.Errorf("transition time %v before the first ready %v", got, readySince)
	}
}

// TestNodeStatusRetries: a patch the API server refuses (a conflict, or no
// answer) is tried again until it goes through.
func TestNodeStatusRetries(t *testing.T) {
	cs := fake.NewClientset(node(kubeletTaint))
	var mu sync.Mutex
	failures := 2
	cs.PrependReactor("patch", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		if a.GetSubresource() == "" && failures > 0 {
			failures--
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "nodes"}, nodeName, errors.New("changed"))
		}
		return false, nil, nil
	})
	c := start(t, cs, Config{})
	run(t, c)
	c.SetNetwork(NetworkStatus{State: NetworkReady})
	waitFor(t, "taint removed after two conflicts", func() bool { return !hasNotReadyTaint(nodeNow(t, cs)) })
	mu.Lock()
	defer mu.Unlock()
	if failures != 0 {
		t.Errorf("%d failures left", failures)
	}
}

// TestEventsAggregate: the same warning twice is one Event on the Node
// with a count of 2.
func TestEventsAggregate(t *testing.T) {
	cs := fake.NewClientset(node())
	c := start(t, cs, Config{})
	run(t, c)
	msg := "no pod address left for default/x: this node's limit is 30 pods"
	c.Warn("PoolExhausted", msg)
	waitFor(t, "first event", func() bool { return len(eventsIn(t, cs)) == 1 })
	c.Warn("PoolExhausted", msg)
	waitFor(t, "count 2", func() bool { ev := eventsIn(t, cs); return len(ev) == 1 && ev[0].Count == 2 })
	ev := eventsIn(t, cs)[0]
	if ev.InvolvedObject.Kind != "Node" || ev.InvolvedObject.Name != nodeName || ev.Type != corev1.EventTypeWarning ||
		ev.Reason != "PoolExhausted" || ev.Message != msg || ev.Source.Component != Component || ev.Source.Host != nodeName {
		t.Errorf("event %+v", ev)
	}
}

func eventsIn(t *testing.T, cs *fake.Clientset) []corev1.Event {
	t.Helper()
	l, err := cs.CoreV1().Events("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// TestPermissions: the calls the client makes are exactly Permissions, so
// the ClusterRole deploy/ ships (checked against Permissions) grants no
// verb the agent does not use and lacks none it does.
func TestPermissions(t *testing.T) {
	cs := fake.NewClientset(node(kubeletTaint), pod("a", "10.240.0.5"))
	c := start(t, cs, Config{})
	snapshots := make(chan policy.Snapshot, 10)
	c.OnPolicySnapshot(func(s policy.Snapshot) { snapshots <- s })
	c.WatchServices(ServicesHandler{Apply: func(services.Key, *services.Service, []*services.EndpointSlice, time.Time) error { return nil }})
	run(t, c)
	<-snapshots
	if _, err := c.GetPod(context.Background(), "default", "a"); err != nil {
		t.Fatal(err)
	}
	c.SetNetwork(NetworkStatus{State: NetworkReady})
	c.Warn("PoolExhausted", "x")
	c.Warn("PoolExhausted", "x")
	waitFor(t, "node ready and event counted", func() bool {
		ev := eventsIn(t, cs)
		return !hasNotReadyTaint(nodeNow(t, cs)) && len(ev) == 1 && ev[0].Count == 2 && len(c.LocalPods()) == 1
	})
	c.SetNetwork(NetworkStatus{State: NetworkFailed, Message: "x"})
	waitFor(t, "tainted", func() bool { return hasNotReadyTaint(nodeNow(t, cs)) })
	c.Close()

	granted := map[string]bool{}
	for _, p := range Permissions {
		for _, v := range p.Verbs {
			granted[p.Resource+" "+v] = true
		}
	}
	used := map[string]bool{}
	for _, a := range cs.Actions() {
		res := a.GetResource().Resource
		if a.GetSubresource() != "" {
			res += "/" + a.GetSubresource()
		}
		// The test's own reads go through the same fake: it reads nodes
		// and events, the client gets pods.
		if a.GetVerb() == "get" && res != "pods" || a.GetVerb() == "list" && res == "events" {
			continue
		}
		used[res+" "+a.GetVerb()] = true
	}
	for u := range used {
		if !granted[u] {
			t.Errorf("the client calls %s, which Permissions do not list", u)
		}
	}
	for g := range granted {
		if !used[g] {
			t.Errorf("Permissions grant %s, which the client never calls", g)
		}
	}
}

// TestHealth: a failed watch marks the API server unreachable at once, the
// next answer of /readyz reachable again; the callback hears each change
// once.
func TestHealth(t *testing.T) {
	var mu sync.Mutex
	down := false
	var changes []bool
	h := newHealth(func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return errors.New("connection refused")
		}
		return nil
	}, nil, func(s APIStatus) { mu.Lock(); changes = append(changes, s.Up); mu.Unlock() }, zaptest.NewLogger(t))
	h.every, h.downEvery = time.Hour, 10*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.run(ctx)
	waitFor(t, "up", func() bool { return h.status().Up })

	mu.Lock()
	down = true
	mu.Unlock()
	h.watchFailed(apierrors.NewResourceExpired("too old")) // the server answered
	h.watchFailed(fmt.Errorf("list: %w", errors.New("dial tcp: connection refused")))
	if st := h.status(); st.Up || st.Err == nil {
		t.Fatalf("after a failed watch: %+v", st)
	}
	mu.Lock()
	down = false
	mu.Unlock()
	waitFor(t, "up again", func() bool { return h.status().Up })
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(changes, []bool{true, false, true}) {
		t.Errorf("changes %v, want up, down, up", changes)
	}
}

func TestPodsFileRoundTrip(t *testing.T) {
	n := paths.Node{StateDir: t.TempDir()}
	pods := []Pod{podOf(pod("a", "10.240.0.5"))}
	if err := WritePodsFile(n, nodeName, pods); err != nil {
		t.Fatal(err)
	}
	f, err := ReadPodsFile(n)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Pods) != 1 || !podEqual(f.Pods[0], pods[0]) || f.UpdatedAt.IsZero() {
		t.Errorf("read back %+v", f)
	}
	if _, err := ReadPodsFile(paths.Node{StateDir: filepath.Join(n.StateDir, "none")}); err == nil {
		t.Error("a missing pods file read without error")
	}
}
