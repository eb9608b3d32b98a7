package services

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
)

// TestHealthServer: kube-proxy's answers on a healthCheckNodePort: 200 with
// local endpoints, 503 without (or when the data path does not serve), the
// JSON body and headers it writes; a port given up stops answering.
func TestHealthServer(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	lns := map[uint16]net.Listener{}
	h := NewHealthServer(func(port uint16) (net.Listener, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		lns[port] = ln
		return ln, err
	}, healthy.Load)
	defer h.Close()
	key := Key{"default", "web"}
	get := func(port uint16) (int, map[string]any, http.Header) {
		t.Helper()
		resp, err := http.Get("http://" + lns[port].Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var body map[string]any
		if err := json.Unmarshal(b, &body); err != nil {
			t.Fatalf("body %q: %v", b, err)
		}
		return resp.StatusCode, body, resp.Header
	}
	if err := h.Set(key, 32000, 2); err != nil {
		t.Fatal(err)
	}
	code, body, hdr := get(32000)
	if code != 200 || body["localEndpoints"] != 2.0 || body["serviceProxyHealthy"] != true {
		t.Errorf("with 2 local endpoints: %d %v", code, body)
	}
	if svc, _ := body["service"].(map[string]any); svc["namespace"] != "default" || svc["name"] != "web" {
		t.Errorf("service in the body: %v", body["service"])
	}
	if hdr.Get("Content-Type") != "application/json" || hdr.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("headers %v", hdr)
	}
	if err := h.Set(key, 32000, 0); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := get(32000); code != 503 || body["localEndpoints"] != 0.0 {
		t.Errorf("without local endpoints: %d %v", code, body)
	}
	h.Set(key, 32000, 1)
	healthy.Store(false)
	if code, body, _ := get(32000); code != 503 || body["serviceProxyHealthy"] != false {
		t.Errorf("data path not serving: %d %v", code, body)
	}
	if err := h.Set(Key{"other", "svc"}, 32000, 1); err == nil {
		t.Errorf("a second Service took port 32000")
	}
	h.Set(key, 0, 0)
	if _, err := http.Get("http://" + lns[32000].Addr().String() + "/"); err == nil {
		t.Errorf("the port still answers after the Service gave it up")
	}
}
