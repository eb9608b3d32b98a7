package agent

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/podvnet/podvnet/pkg/policy"
)

// fakeSource is an API server that answers GETs from a table.
type fakeSource struct {
	pods map[string]policy.Pod
	err  error
	gets int
}

func (f *fakeSource) OnPolicySnapshot(func(policy.Snapshot)) {}

func (f *fakeSource) GetPod(_ context.Context, ns, name string) (policy.Pod, error) {
	f.gets++
	if f.err != nil {
		return policy.Pod{}, f.err
	}
	p, ok := f.pods[ns+"/"+name]
	if !ok {
		return policy.Pod{}, errors.New("not found")
	}
	return p, nil
}

func testPolicyCtl(unknown string, src *fakeSource, synced bool) *policyCtl {
	c := &policyCtl{opts: PolicyOptions{Source: src, Unknown: unknown, Wait: 50 * time.Millisecond}, log: zap.NewNop(),
		engine: policy.NewEngine(policy.Config{}), synced: make(chan struct{}), idsDirty: make(chan struct{}, 1)}
	if synced {
		c.engine.Update(policy.Snapshot{Pods: []policy.Pod{{Namespace: "shop", Name: "web-0", UID: "u1", IP: netip.MustParseAddr("10.240.0.9"),
			Labels: map[string]string{"app": "web"}}}})
		close(c.synced)
	}
	return c
}

// TestPodForAdd: an ADD gets the pod's labels from the informer, else from
// a GET; a pod whose policy cannot be known is refused with an error that
// says why and what setting allows it, or starts open when the setting
// says so; a pod that is not Kubernetes' starts open.
func TestPodForAdd(t *testing.T) {
	ctx := context.Background()
	src := &fakeSource{pods: map[string]policy.Pod{"shop/new": {Namespace: "shop", Name: "new", UID: "u2", Labels: map[string]string{"app": "new"}}}}

	c := testPolicyCtl(PolicyUnknownDeny, src, true)
	if pod, known, err := c.podForAdd(ctx, "shop", "web-0", "u1"); err != nil || !known || pod.Labels["app"] != "web" || src.gets != 0 {
		t.Errorf("from the informer: %+v %v %v (%d GETs)", pod, known, err, src.gets)
	}
	if pod, known, err := c.podForAdd(ctx, "shop", "new", "u2"); err != nil || !known || pod.Labels["app"] != "new" || src.gets != 1 {
		t.Errorf("from a GET: %+v %v %v (%d GETs)", pod, known, err, src.gets)
	}
	// A pod of the same name, another UID (recreated): the informer's is old.
	if _, _, err := c.podForAdd(ctx, "shop", "web-0", "u9"); err == nil || src.gets != 2 {
		t.Errorf("another UID: %v after %d GETs, want a GET (that fails here)", err, src.gets)
	}
	if _, known, err := c.podForAdd(ctx, "", "", ""); err != nil || known {
		t.Errorf("no pod name: %v %v, want open", known, err)
	}

	src.err = errors.New("connection refused")
	_, _, err := c.podForAdd(ctx, "shop", "other", "u3")
	if !errors.Is(err, ErrPolicyUnknown) || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "--policy-unknown=deny") {
		t.Errorf("GET failed, deny: %v", err)
	}

	c = testPolicyCtl(PolicyUnknownDeny, src, false)
	_, _, err = c.podForAdd(ctx, "shop", "web-0", "u1")
	if !errors.Is(err, ErrPolicyUnknown) || !strings.Contains(err.Error(), "has not heard from the API server") {
		t.Errorf("never synced, deny: %v", err)
	}
	c = testPolicyCtl(PolicyUnknownAllow, src, false)
	if _, known, err := c.podForAdd(ctx, "shop", "web-0", "u1"); err != nil || known {
		t.Errorf("never synced, allow: %v %v, want open", known, err)
	}
}
