package services

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// HealthServer answers kube-proxy's healthCheckNodePort for the Services
// with externalTrafficPolicy Local: on each such port, HTTP 200 while this
// node has a ready endpoint of the Service and the data path serves, 503
// otherwise, with kube-proxy's JSON body, so a cloud load balancer sends
// traffic only to nodes that can take it (pkg/proxy/healthcheck).
type HealthServer struct {
	listen  func(port uint16) (net.Listener, error)
	healthy func() bool

	mu    sync.Mutex
	ports map[uint16]*healthPort
}

type healthPort struct {
	key   Key
	local int
	srv   *http.Server
}

// NewHealthServer serves on the ports listen opens (the node's addresses);
// healthy says whether the data path serves Services.
func NewHealthServer(listen func(port uint16) (net.Listener, error), healthy func() bool) *HealthServer {
	return &HealthServer{listen: listen, healthy: healthy, ports: map[uint16]*healthPort{}}
}

// ListenTCP opens port on every address of the node.
func ListenTCP(port uint16) (net.Listener, error) {
	return net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(int(port))))
}

// Set makes the Service key answer on port with localEndpoints this
// node's ready endpoint addresses; port 0 stops answering for it.
func (h *HealthServer) Set(key Key, port uint16, localEndpoints int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for p, hp := range h.ports {
		if hp.key == key && p != port {
			hp.srv.Close()
			delete(h.ports, p)
		}
	}
	if port == 0 {
		return nil
	}
	if hp, ok := h.ports[port]; ok {
		if hp.key != key {
			return fmt.Errorf("healthCheckNodePort %d of %s: %s has it", port, key, hp.key)
		}
		hp.local = localEndpoints
		return nil
	}
	ln, err := h.listen(port)
	if err != nil {
		return fmt.Errorf("healthCheckNodePort %d of %s: %w", port, key, err)
	}
	hp := &healthPort{key: key, local: localEndpoints}
	hp.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { h.answer(w, port) }),
		ReadHeaderTimeout: 5 * time.Second}
	h.ports[port] = hp
	go hp.srv.Serve(ln)
	return nil
}

// answer writes kube-proxy's response (service_health.go ServeHTTP).
func (h *HealthServer) answer(w http.ResponseWriter, port uint16) {
	h.mu.Lock()
	hp, ok := h.ports[port]
	var key Key
	local := 0
	if ok {
		key, local = hp.key, hp.local
	}
	h.mu.Unlock()
	healthy := h.healthy()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(local))
	if local == 0 || !healthy {
		w.WriteHeader(http.StatusServiceUnavailable)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	fmt.Fprintf(w, "{\n\t\"service\": {\n\t\t\"namespace\": %q,\n\t\t\"name\": %q\n\t},\n\t\"localEndpoints\": %d,\n\t\"serviceProxyHealthy\": %v\n}",
		key.Namespace, key.Name, local, healthy)
}

// Close stops every port.
func (h *HealthServer) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	for p, hp := range h.ports {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := hp.srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
		cancel()
		delete(h.ports, p)
	}
	return errors.Join(errs...)
}
