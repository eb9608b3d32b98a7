package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// APIServerIP is the control plane's address: a VM of the subnet, which
// kubelets, agents and kube-proxy reach over the fabric like any VNet peer.
var APIServerIP = netip.MustParseAddr("10.240.100.10")

// APIServerPort is kube-apiserver's secure port.
const APIServerPort = 6443

// Cluster settings, the agent's defaults (AKS's): the Service CIDR stays
// clear of the VNet (10.240.0.0/16), or the agent refuses to start.
var (
	ServiceCIDR  = netip.MustParsePrefix("10.0.0.0/16")
	DNSServiceIP = netip.MustParseAddr("10.0.0.10")
)

// APIServerURL is where every component finds the API.
func APIServerURL() string {
	return fmt.Sprintf("https://%s", netip.AddrPortFrom(APIServerIP, APIServerPort))
}

// startControlPlane runs etcd and kube-apiserver in the control plane's
// namespace, waits until the API server is ready, and with controllers
// also starts kube-controller-manager and kube-scheduler.
func (c *Cluster) startControlPlane(controllers bool) error {
	cp, err := c.VNet.AddHost("cp", vnet.HostOptions{Addr: netip.PrefixFrom(APIServerIP, vnet.Subnet.Bits())})
	if err != nil {
		return fmt.Errorf("control plane namespace: %w", err)
	}
	c.ControlPlane = cp
	dir := filepath.Join(c.dir, "cp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	c.cpArgs = map[string][]string{}
	p := c.pki
	// The kubernetes Service's ClusterIP is the Service CIDR's first address.
	svcIP := ServiceCIDR.Addr().Next()
	if _, _, err := p.issue(certSpec{file: "apiserver", cn: "kube-apiserver", server: true,
		ips: []net.IP{APIServerIP.AsSlice(), svcIP.AsSlice(), net.IPv4(127, 0, 0, 1)},
		dns: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"},
	}); err != nil {
		return err
	}
	// The API server's identity towards kubelets (exec, logs, port-forward).
	if _, _, err := p.issue(certSpec{file: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}}); err != nil {
		return err
	}
	if c.adminConfig, err = p.kubeconfig("admin", APIServerURL(), "kubernetes-admin", "system:masters"); err != nil {
		return err
	}
	cmConfig, err := p.kubeconfig("controller-manager", APIServerURL(), "system:kube-controller-manager")
	if err != nil {
		return err
	}
	schedConfig, err := p.kubeconfig("scheduler", APIServerURL(), "system:kube-scheduler")
	if err != nil {
		return err
	}

	inCP := func(name string, args ...string) error {
		c.cpArgs[name] = append([]string{"nsenter", "--net=" + cp.NS.Path(), filepath.Join(c.Opts.KubeDir, name)}, args...)
		pr, err := startProc(name, filepath.Join(dir, name+".log"), c.cpArgs[name]...)
		if err != nil {
			return err
		}
		c.cpProcs = append(c.cpProcs, pr)
		return nil
	}
	if err := inCP("etcd",
		"--name=podvnet-test", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=podvnet-test=http://127.0.0.1:2380",
		// A test cluster lives minutes; fsync on a shared disk costs seconds.
		"--unsafe-no-fsync", "--log-level=warn",
	); err != nil {
		return err
	}
	if err := inCP("kube-apiserver",
		"--advertise-address="+APIServerIP.String(), "--bind-address="+APIServerIP.String(),
		fmt.Sprintf("--secure-port=%d", APIServerPort),
		"--etcd-servers=http://127.0.0.1:2379",
		"--service-cluster-ip-range="+ServiceCIDR.String(),
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--client-ca-file="+p.path("ca.crt"),
		"--tls-cert-file="+p.path("apiserver.crt"), "--tls-private-key-file="+p.path("apiserver.key"),
		"--kubelet-client-certificate="+p.path("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+p.path("apiserver-kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p.path("sa.pub"), "--service-account-signing-key-file="+p.path("sa.key"),
		"--profiling=false", "--v=1",
	); err != nil {
		return err
	}
	if err := c.waitAPIServer(2 * time.Minute); err != nil {
		return err
	}
	if !controllers {
		return nil
	}
	common := func(kubeconfig string) []string {
		return []string{"--kubeconfig=" + kubeconfig, "--authentication-kubeconfig=" + kubeconfig,
			"--authorization-kubeconfig=" + kubeconfig, "--bind-address=127.0.0.1", "--leader-elect=false",
			"--profiling=false", "--v=1"}
	}
	if err := inCP("kube-controller-manager", append(common(cmConfig),
		"--service-account-private-key-file="+p.path("sa.key"), "--root-ca-file="+p.path("ca.crt"),
		"--use-service-account-credentials=true",
		"--service-cluster-ip-range="+ServiceCIDR.String(),
		"--allocate-node-cidrs=false",
	)...); err != nil {
		return err
	}
	return inCP("kube-scheduler", common(schedConfig)...)
}

// dialCP dials addr from inside the control plane's namespace, where the
// API server's address is local: the test process's own namespace has no
// route into the VNet, and gets none.
func (c *Cluster) dialCP(ctx context.Context, network, addr string) (conn net.Conn, err error) {
	err = c.ControlPlane.Do(func() error {
		var d net.Dialer
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

func (c *Cluster) waitAPIServer(timeout time.Duration) error {
	ca, err := os.ReadFile(c.pki.path("ca.crt"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: c.dialCP, TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true,
	}}
	return poll(timeout, 250*time.Millisecond, "kube-apiserver /readyz", func() (bool, error) {
		for _, p := range c.cpProcs {
			if !p.running() {
				return false, fatal(p.exitError())
			}
		}
		resp, err := hc.Get(APIServerURL() + "/readyz")
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("/readyz %s: %s", resp.Status, b)
		}
		return true, nil
	})
}

// StopAPIServer stops kube-apiserver (SIGTERM, then SIGKILL), as an outage
// of the control plane; StartAPIServer brings it back.
func (c *Cluster) StopAPIServer() {
	for _, p := range c.cpProcs {
		if p.name == "kube-apiserver" {
			p.stop(5 * time.Second)
		}
	}
}

// StartAPIServer starts kube-apiserver again after StopAPIServer and waits
// until it is ready.
func (c *Cluster) StartAPIServer() error {
	for i, p := range c.cpProcs {
		if p.name != "kube-apiserver" {
			continue
		}
		if p.running() {
			return errors.New("kube-apiserver is running")
		}
		np, err := startProc(p.name, p.log, c.cpArgs[p.name]...)
		if err != nil {
			return err
		}
		c.cpProcs[i] = np
	}
	return c.waitAPIServer(2 * time.Minute)
}
