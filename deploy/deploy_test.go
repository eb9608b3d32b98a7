// Package deploy holds the manifests `kubectl apply -k deploy/` installs;
// this test renders them as kubectl does and checks them against the
// Kubernetes API types, the agent's real flags and the image.
package deploy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/podvnet/podvnet/pkg/agent"
	"github.com/podvnet/podvnet/pkg/install"
	"github.com/podvnet/podvnet/pkg/kube"
)

// Host paths the agent needs (docs/operations.md says why for each).
const (
	hostBPFFS   = "/sys/fs/bpf"
	hostCNIBin  = "/opt/cni/bin"
	hostCNIConf = "/etc/cni/net.d"
	hostState   = "/var/lib/podvnet"
	hostRun     = "/run/podvnet"
	hostNetns   = "/var/run/netns"
)

// objects are the decoded manifests, by kind.
type objects struct {
	daemonSets      []*appsv1.DaemonSet
	configMaps      []*corev1.ConfigMap
	serviceAccounts []*corev1.ServiceAccount
	clusterRoles    []*rbacv1.ClusterRole
	bindings        []*rbacv1.ClusterRoleBinding
}

// decodeStrict decodes one YAML document into its API type: unknown
// fields, duplicate fields and wrong types fail, as `kubectl apply
// --validate=strict` would refuse them.
func (o *objects) decodeStrict(doc []byte) error {
	var tm struct{ APIVersion, Kind string }
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	var into any
	switch tm.APIVersion + "/" + tm.Kind {
	case "apps/v1/DaemonSet":
		ds := &appsv1.DaemonSet{}
		o.daemonSets, into = append(o.daemonSets, ds), ds
	case "v1/ConfigMap":
		cm := &corev1.ConfigMap{}
		o.configMaps, into = append(o.configMaps, cm), cm
	case "v1/ServiceAccount":
		sa := &corev1.ServiceAccount{}
		o.serviceAccounts, into = append(o.serviceAccounts, sa), sa
	case "rbac.authorization.k8s.io/v1/ClusterRole":
		r := &rbacv1.ClusterRole{}
		o.clusterRoles, into = append(o.clusterRoles, r), r
	case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
		b := &rbacv1.ClusterRoleBinding{}
		o.bindings, into = append(o.bindings, b), b
	default:
		// Anything else is a decision: teach this test about it.
		return fmt.Errorf("unexpected object %s %s", tm.APIVersion, tm.Kind)
	}
	return yaml.UnmarshalStrict(doc, into)
}

func splitDocs(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(d, "")) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func readKustomization(t *testing.T, dir string) *kusttypes.Kustomization {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	k := &kusttypes.Kustomization{}
	if err := yaml.UnmarshalStrict(b, k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	return k
}

// kustomizations are the directories `kubectl apply -k` is pointed at.
var kustomizations = []string{".", "uninstall"}

// TestManifestsDecodeStrictly: every file of deploy/ is valid for its API
// type, and every file is part of a kustomization.
func TestManifestsDecodeStrictly(t *testing.T) {
	used := map[string]bool{}
	for _, dir := range kustomizations {
		k := readKustomization(t, dir)
		files := append([]string{"kustomization.yaml"}, k.Resources...)
		for _, g := range k.ConfigMapGenerator {
			files = append(append(files, g.EnvSources...), g.FileSources...)
		}
		for _, f := range files {
			used[filepath.Join(dir, f)] = true
		}
	}
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".go") {
			return err
		}
		if !used[path] {
			t.Errorf("%s is in no kustomization: kubectl apply -k would not install it", path)
		}
		if !strings.HasSuffix(path, ".yaml") || filepath.Base(path) == "kustomization.yaml" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var o objects
		for _, doc := range splitDocs(b) {
			if err := o.decodeStrict(doc); err != nil {
				t.Errorf("%s: %v", path, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The strict decoder does refuse what the API server would.
	var o objects
	for name, doc := range map[string]string{
		"unknown field": "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x}\nautomountToken: false\n",
		"wrong type":    "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x}\nautomountServiceAccountToken: \"no\"\n",
	} {
		if err := o.decodeStrict([]byte(doc)); err == nil {
			t.Errorf("decodeStrict accepted a manifest with a %s", name)
		}
	}
}

// render builds deploy/ as `kubectl apply -k deploy/` does (kubectl embeds
// kustomize) and decodes the result strictly.
func render(t *testing.T, kdir string) *objects {
	t.Helper()
	dir, err := filepath.Abs(kdir)
	if err != nil {
		t.Fatal(err)
	}
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build: %v", err)
	}
	o := &objects{}
	for _, r := range rm.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		if err := o.decodeStrict(b); err != nil {
			t.Fatalf("rendered %s: %v", r.CurId(), err)
		}
		if ns := r.GetNamespace(); ns != "kube-system" && !clusterScoped[r.GetKind()] {
			t.Errorf("%s in namespace %q, want kube-system (system-node-critical, where CNIs live)", r.CurId(), ns)
		}
	}
	return o
}

// clusterScoped are the kinds deploy/ ships that live in no namespace.
var clusterScoped = map[string]bool{"ClusterRole": true, "ClusterRoleBinding": true}

// bins returns a directory with podvnet-agent and podvnet: PODVNET_BIN_DIR
// (make test builds them) or a fresh build.
func bins(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("PODVNET_BIN_DIR"); dir != "" {
		return dir
	}
	dir := t.TempDir()
	for pkg, name := range map[string]string{"./cmd/agent": "podvnet-agent", "./cmd/plugin": "podvnet"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	// The reference plugins the shipped conflist chains, in dir/cni as
	// `make test` leaves them.
	cmd := exec.Command("make", "-s", "cni-plugins", "BIN="+dir)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make cni-plugins: %v\n%s", err, out)
	}
	return dir
}

// helpFlags parses `podvnet-agent <sub> --help` of the real binary into a
// flag set with the same names and value types.
func helpFlags(t *testing.T, agentBin, sub string) *pflag.FlagSet {
	t.Helper()
	out, err := exec.Command(agentBin, sub, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("podvnet-agent %s --help: %v\n%s", sub, err, out)
	}
	fs := pflag.NewFlagSet(sub, pflag.ContinueOnError)
	line := regexp.MustCompile(`^\s+(?:-\w, )?--([a-z0-9-]+)(?: (\w+))?\s`)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil || m[1] == "help" {
			continue
		}
		switch m[2] {
		case "":
			fs.Bool(m[1], false, "")
		case "string":
			fs.String(m[1], "", "")
		case "int":
			fs.Int(m[1], 0, "")
		case "duration":
			fs.Duration(m[1], 0, "")
		case "strings":
			fs.StringSlice(m[1], nil, "")
		default:
			t.Fatalf("--%s has type %s: teach the test", m[1], m[2])
		}
	}
	if fs.Lookup("socket") == nil {
		t.Fatalf("no flags found in the help:\n%s", out)
	}
	return fs
}

// expandArgs expands $(VAR) as the kubelet does, from the container's env
// resolved against the rendered ConfigMap; an unresolved reference would
// reach the agent literally, so it fails.
func expandArgs(t *testing.T, c corev1.Container, cm *corev1.ConfigMap) []string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			if cm != nil && ref.Name == cm.Name && !hasKey(cm, ref.Key) && ref.Optional != nil && *ref.Optional {
				continue // kubelet leaves the variable unset
			}
			if cm == nil || ref.Name != cm.Name || !hasKey(cm, ref.Key) {
				t.Errorf("env %s: ConfigMap %s has no key %s", e.Name, ref.Name, ref.Key)
				continue
			}
			env[e.Name] = cm.Data[ref.Key]
		case e.ValueFrom.FieldRef != nil:
			env[e.Name] = "field:" + e.ValueFrom.FieldRef.FieldPath
		}
	}
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	var args []string
	for _, a := range c.Args {
		args = append(args, ref.ReplaceAllStringFunc(a, func(s string) string {
			name := ref.FindStringSubmatch(s)[1]
			v, ok := env[name]
			if !ok {
				t.Errorf("arg %q refers to $(%s), which the container's env does not define", a, name)
			}
			return v
		}))
	}
	return args
}

func hasKey(cm *corev1.ConfigMap, key string) bool {
	_, ok := cm.Data[key]
	return ok
}

// agentPod is a rendered DaemonSet's container that runs podvnet-agent,
// with its flags parsed.
type agentPod struct {
	ds    *appsv1.DaemonSet
	c     corev1.Container
	flags *pflag.FlagSet
}

func (a agentPod) flag(t *testing.T, name string) string {
	t.Helper()
	f := a.flags.Lookup(name)
	if f == nil || !f.Changed {
		t.Fatalf("the DaemonSet does not set --%s", name)
	}
	return f.Value.String()
}

// hostMount returns the container path where hostPath is mounted.
func (a agentPod) hostMount(t *testing.T, hostPath string) corev1.VolumeMount {
	t.Helper()
	for _, v := range a.ds.Spec.Template.Spec.Volumes {
		if v.HostPath == nil || v.HostPath.Path != hostPath {
			continue
		}
		for _, m := range a.c.VolumeMounts {
			if m.Name == v.Name {
				return m
			}
		}
	}
	t.Fatalf("host path %s is not mounted into the agent", hostPath)
	return corev1.VolumeMount{}
}

// loadAgent renders deploy/ and returns its agent.
func loadAgent(t *testing.T, binDir string) (*objects, agentPod) {
	t.Helper()
	o := render(t, ".")
	if len(o.daemonSets) != 1 || len(o.configMaps) != 1 || len(o.serviceAccounts) != 1 || len(o.clusterRoles) != 1 || len(o.bindings) != 1 {
		t.Fatalf("rendered %d DaemonSets, %d ConfigMaps, %d ServiceAccounts, %d ClusterRoles, %d ClusterRoleBindings; want one each",
			len(o.daemonSets), len(o.configMaps), len(o.serviceAccounts), len(o.clusterRoles), len(o.bindings))
	}
	ds := o.daemonSets[0]
	if len(ds.Spec.Template.Spec.Containers) != 1 || len(ds.Spec.Template.Spec.InitContainers) != 0 {
		t.Fatalf("want the agent container alone")
	}
	return o, parseAgent(t, ds, ds.Spec.Template.Spec.Containers[0], o.configMaps[0], binDir, "run")
}

// parseAgent parses the args of c, which runs `podvnet-agent sub`.
func parseAgent(t *testing.T, ds *appsv1.DaemonSet, c corev1.Container, cm *corev1.ConfigMap, binDir, sub string) agentPod {
	t.Helper()
	a := agentPod{ds: ds, c: c, flags: helpFlags(t, filepath.Join(binDir, "podvnet-agent"), sub)}
	args := expandArgs(t, a.c, cm)
	if len(a.c.Command) != 0 || len(args) == 0 || args[0] != sub {
		t.Fatalf("%s: command %q args %q: want the image's entrypoint with `%s`", ds.Name, a.c.Command, args, sub)
	}
	if err := a.flags.Parse(args[1:]); err != nil {
		t.Fatalf("%s: the flags do not parse as `podvnet-agent %s` flags: %v", ds.Name, sub, err)
	}
	if rest := a.flags.Args(); len(rest) != 0 {
		t.Errorf("stray arguments %q (run takes none)", rest)
	}
	return a
}

// TestDaemonSet checks the rendered DaemonSet against what a node needs
// and against the real `podvnet-agent run` flags.
func TestDaemonSet(t *testing.T) {
	binDir := bins(t)
	o, a := loadAgent(t, binDir)
	spec := a.ds.Spec.Template.Spec

	t.Run("node agent", func(t *testing.T) {
		if !spec.HostNetwork {
			t.Error("hostNetwork is off: the agent manages the node's NIC, routes and nftables")
		}
		if spec.DNSPolicy != corev1.DNSDefault {
			t.Errorf("dnsPolicy %q: cluster DNS needs the CNI first; want Default", spec.DNSPolicy)
		}
		if spec.PriorityClassName != "system-node-critical" {
			t.Errorf("priorityClassName %q", spec.PriorityClassName)
		}
		if !slices.ContainsFunc(spec.Tolerations, func(tl corev1.Toleration) bool {
			return tl.Operator == corev1.TolerationOpExists && tl.Key == "" && tl.Effect == ""
		}) {
			t.Errorf("tolerations %+v: none tolerates every taint", spec.Tolerations)
		}
		if spec.ServiceAccountName != o.serviceAccounts[0].Name {
			t.Errorf("serviceAccountName %q, the ServiceAccount is %q", spec.ServiceAccountName, o.serviceAccounts[0].Name)
		}
		if spec.AutomountServiceAccountToken == nil || !*spec.AutomountServiceAccountToken {
			t.Error("no service account token is mounted: the agent's in-cluster config reads it")
		}
		if sa := o.serviceAccounts[0]; sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
			t.Error("the ServiceAccount mounts its token into every pod that names it; only the agent's pod asks for it")
		}
		if got := a.flag(t, "node-name"); got != "field:spec.nodeName" {
			t.Errorf("--node-name is %q, want the downward API's spec.nodeName", got)
		}
		if spec.TerminationGracePeriodSeconds == nil || *spec.TerminationGracePeriodSeconds <= 10 {
			t.Error("terminationGracePeriodSeconds must exceed the agent's 10 s API shutdown")
		}
		req := a.c.Resources.Requests
		if req.Cpu().IsZero() || req.Memory().IsZero() {
			t.Errorf("resource requests %v: want cpu and memory", req)
		}
		if !slices.ContainsFunc(a.c.Env, func(e corev1.EnvVar) bool {
			return e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
		}) {
			t.Error("NODE_NAME does not come from the downward API (spec.nodeName)")
		}
		img := a.c.Image
		if i := strings.LastIndex(img, "/"); !strings.Contains(img[i+1:], ":") && !strings.Contains(img, "@") || strings.HasSuffix(img, ":latest") {
			t.Errorf("image %q: want an exact tag or digest", img)
		}
	})

	t.Run("rolling update", func(t *testing.T) {
		us := a.ds.Spec.UpdateStrategy
		if us.Type != appsv1.RollingUpdateDaemonSetStrategyType || us.RollingUpdate == nil {
			t.Fatalf("updateStrategy %+v, want RollingUpdate", us)
		}
		if mu := us.RollingUpdate.MaxUnavailable; mu == nil || *mu != intstr.FromInt32(1) {
			t.Errorf("maxUnavailable %v, want 1", mu)
		}
		if ms := us.RollingUpdate.MaxSurge; ms != nil && ms.IntValue() != 0 {
			t.Errorf("maxSurge %v: two agents on one node would contend for pins, socket and port", ms)
		}
		if a.ds.Spec.MinReadySeconds == 0 {
			t.Error("minReadySeconds 0: a CNI install failing right after ready would not stop the rollout")
		}
	})

	t.Run("mounts match flags", func(t *testing.T) {
		under := func(flag, dir string) {
			if v := a.flag(t, flag); v != dir && !strings.HasPrefix(v, dir+"/") {
				t.Errorf("--%s=%s is not under the mount %s", flag, v, dir)
			}
		}
		bpf := a.hostMount(t, hostBPFFS)
		under("bpffs-root", bpf.MountPath)
		if bpf.MountPropagation == nil || *bpf.MountPropagation != corev1.MountPropagationBidirectional {
			t.Error("bpffs not mounted Bidirectional: a bpffs the agent mounts would die with the container, and its pins")
		}
		under("state-dir", a.hostMount(t, hostState).MountPath)
		under("cni-conf-dir", a.hostMount(t, hostCNIConf).MountPath)
		under("cni-bin-dir", a.hostMount(t, hostCNIBin).MountPath)
		if run := a.hostMount(t, hostRun); run.MountPath != hostRun {
			t.Errorf("%s mounted at %s: the plugin on the host dials the socket path of the conflist, which must be the agent's", hostRun, run.MountPath)
		}
		under("socket", hostRun)
		netns := a.hostMount(t, hostNetns)
		if netns.MountPropagation == nil || *netns.MountPropagation == corev1.MountPropagationNone {
			t.Error("netns mount without propagation: namespaces created after the agent started would be invisible")
		}
		for _, m := range []string{hostState, hostCNIConf, hostCNIBin, hostRun, hostBPFFS} {
			if a.hostMount(t, m).ReadOnly {
				t.Errorf("%s mounted read-only: the agent writes there", m)
			}
		}
		if a.flag(t, "ipam-source") == "static" {
			pool := filepath.Dir(a.flag(t, "pool-file"))
			for _, v := range spec.Volumes {
				if v.HostPath != nil && v.HostPath.Path == pool {
					under("pool-file", a.hostMount(t, pool).MountPath)
					return
				}
			}
			t.Errorf("--pool-file %s: its host directory is not mounted", a.flag(t, "pool-file"))
		}
	})

	t.Run("probes hit the agent's health endpoints", func(t *testing.T) {
		_, port, err := net.SplitHostPort(a.flag(t, "metrics-addr"))
		if err != nil {
			t.Fatal(err)
		}
		if _, want, _ := net.SplitHostPort(agent.DefaultMetricsAddr); port != want {
			t.Errorf("--metrics-addr port %s, the agent's default is %s", port, want)
		}
		probePort := func(p intstr.IntOrString) string {
			if p.Type == intstr.Int {
				return p.String()
			}
			for _, cp := range a.c.Ports {
				if cp.Name == p.StrVal {
					if cp.HostPort != 0 && cp.HostPort != cp.ContainerPort {
						t.Errorf("port %s: hostPort %d differs from containerPort %d on the host network", cp.Name, cp.HostPort, cp.ContainerPort)
					}
					return fmt.Sprint(cp.ContainerPort)
				}
			}
			t.Errorf("probe port %q names no container port", p.StrVal)
			return ""
		}
		for name, tc := range map[string]struct {
			probe *corev1.Probe
			path  string
		}{"liveness": {a.c.LivenessProbe, agent.HealthzPath}, "readiness": {a.c.ReadinessProbe, agent.ReadyzPath}} {
			if tc.probe == nil || tc.probe.HTTPGet == nil {
				t.Errorf("%s probe: want an HTTP GET of %s", name, tc.path)
				continue
			}
			g := tc.probe.HTTPGet
			if g.Path != tc.path || probePort(g.Port) != port || (g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP) {
				t.Errorf("%s probe GETs %s %s:%s, the agent serves %s on :%s", name, g.Scheme, g.Path, g.Port.String(), tc.path, port)
			}
		}
	})

	t.Run("image holds what the DaemonSet runs", func(t *testing.T) {
		dests, entrypoint := dockerfileFinalStage(t, "../Dockerfile")
		if !dests[a.flag(t, "plugin-binary")] {
			t.Errorf("--plugin-binary %s: the Dockerfile's final stage copies nothing there (it copies %v)", a.flag(t, "plugin-binary"), dests)
		}
		if !dests[entrypoint] || filepath.Base(entrypoint) != "podvnet-agent" {
			t.Errorf("ENTRYPOINT %s is not the agent copied into the image", entrypoint)
		}
	})

	t.Run("the conflist installs and serves", func(t *testing.T) {
		conflist := []byte(o.configMaps[0].Data[filepath.Base(a.flag(t, "cni-conflist"))])
		cfgMount := ""
		for _, m := range a.c.VolumeMounts {
			for _, v := range spec.Volumes {
				if v.Name == m.Name && v.ConfigMap != nil && v.ConfigMap.Name == o.configMaps[0].Name {
					cfgMount = m.MountPath
				}
			}
		}
		if cfgMount == "" || filepath.Dir(a.flag(t, "cni-conflist")) != cfgMount {
			t.Errorf("--cni-conflist %s is not in the ConfigMap's mount %q", a.flag(t, "cni-conflist"), cfgMount)
		}
		// The agent's own start-up check: libcni parses it, the plugin
		// (cni.ParseConf) accepts its entry, and it names the agent's socket.
		if err := install.Check(conflist, a.flag(t, "socket")); err != nil {
			t.Fatal(err)
		}
		// containerd 1.6 (libcni 1.1) reads cniVersion alone, and refuses
		// results of 1.1.0.
		var raw struct {
			CNIVersion string `json:"cniVersion"`
		}
		if err := yaml.Unmarshal(conflist, &raw); err != nil || raw.CNIVersion != install.DefaultCNIVersion {
			t.Errorf("cniVersion %q (%v), want %s for containerd 1.6", raw.CNIVersion, err, install.DefaultCNIVersion)
		}
		// The real installer with the real plugin: it asks every plugin of
		// the list (VERSION) for every cniVersion a runtime may pick. The
		// node's bin dir holds the reference plugins the conflist chains,
		// as every containerd install ships them.
		d := t.TempDir()
		for _, ref := range []string{"portmap", "bandwidth", "loopback"} {
			b, err := os.ReadFile(filepath.Join(binDir, "cni", ref))
			if err != nil {
				t.Fatalf("reference plugin %s: %v (make cni-plugins)", ref, err)
			}
			os.MkdirAll(filepath.Join(d, "bin"), 0o755)
			if err := os.WriteFile(filepath.Join(d, "bin", ref), b, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		cfg := install.Config{BinDir: filepath.Join(d, "bin"), ConfDir: filepath.Join(d, "net.d"),
			ConfName: a.flag(t, "cni-conf-name"), Plugin: filepath.Join(binDir, "podvnet"), Conflist: conflist}
		if _, err := cfg.Install(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

// TestRBAC: the ClusterRole grants exactly the calls pkg/kube makes
// (kube.Permissions, which its own test holds to the client's calls), and
// is bound to the ServiceAccount the agent runs as.
func TestRBAC(t *testing.T) {
	o := render(t, ".")
	if len(o.clusterRoles) != 1 || len(o.bindings) != 1 {
		t.Fatalf("%d ClusterRoles, %d ClusterRoleBindings; want one each", len(o.clusterRoles), len(o.bindings))
	}
	// Every (group, resource, verb) granted, sorted, against those called.
	var want, got []string
	for _, p := range kube.Permissions {
		for _, v := range p.Verbs {
			want = append(want, p.Group+"/"+p.Resource+" "+v)
		}
	}
	for _, r := range o.clusterRoles[0].Rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("rule %+v: the agent's calls need neither resource names nor URLs", r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					got = append(got, g+"/"+res+" "+v)
				}
			}
		}
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("the ClusterRole grants %q; the agent calls %q (kube.Permissions)", got, want)
	}
	b, sa := o.bindings[0], o.serviceAccounts[0]
	if b.RoleRef.Kind != "ClusterRole" || b.RoleRef.Name != o.clusterRoles[0].Name {
		t.Errorf("the binding refers to %s %s, not the ClusterRole %s", b.RoleRef.Kind, b.RoleRef.Name, o.clusterRoles[0].Name)
	}
	if len(b.Subjects) != 1 || b.Subjects[0].Kind != "ServiceAccount" || b.Subjects[0].Name != sa.Name || b.Subjects[0].Namespace != sa.Namespace {
		t.Errorf("the binding's subjects %+v; want the ServiceAccount %s/%s alone", b.Subjects, sa.Namespace, sa.Name)
	}
	if ds := o.daemonSets[0]; ds.Spec.Template.Spec.ServiceAccountName != sa.Name {
		t.Errorf("the agent runs as %q, the binding names %q", ds.Spec.Template.Spec.ServiceAccountName, sa.Name)
	}
}

// TestUninstallDaemonSet: deploy/uninstall runs `podvnet-agent cleanup` on
// every node against exactly what the agent's DaemonSet made.
func TestUninstallDaemonSet(t *testing.T) {
	binDir := bins(t)
	_, a := loadAgent(t, binDir)
	o := render(t, "uninstall")
	if len(o.daemonSets) != 1 || len(o.configMaps) != 0 || len(o.serviceAccounts) != 0 || len(o.clusterRoles) != 0 {
		t.Fatalf("rendered %d DaemonSets, %d ConfigMaps, %d ServiceAccounts, %d ClusterRoles; want one DaemonSet",
			len(o.daemonSets), len(o.configMaps), len(o.serviceAccounts), len(o.clusterRoles))
	}
	ds := o.daemonSets[0]
	spec := ds.Spec.Template.Spec
	if len(spec.InitContainers) != 1 {
		t.Fatalf("%d init containers, want cleanup alone", len(spec.InitContainers))
	}
	u := parseAgent(t, ds, spec.InitContainers[0], nil, binDir, "cleanup")
	if u.c.Image != a.c.Image {
		t.Errorf("cleanup runs %s, the agent %s", u.c.Image, a.c.Image)
	}
	for _, f := range []string{"bpffs-root", "state-dir", "socket", "cni-conf-dir", "cni-conf-name"} {
		if u.flag(t, f) != a.flag(t, f) {
			t.Errorf("cleanup --%s=%s, the agent runs with %s", f, u.flag(t, f), a.flag(t, f))
		}
	}
	for _, p := range []string{hostBPFFS, hostState, hostRun, hostCNIConf} {
		if got, want := u.hostMount(t, p).MountPath, a.hostMount(t, p).MountPath; got != want {
			t.Errorf("host %s at %s in cleanup, at %s in the agent: the same flags would name other files", p, got, want)
		}
	}
	if !spec.HostNetwork {
		t.Error("cleanup outside the host network would remove nothing of the node's")
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Operator == corev1.TolerationOpExists && tl.Key == "" && tl.Effect == ""
	}) {
		t.Error("cleanup would skip tainted nodes")
	}
	if sc := u.c.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged {
		t.Error("cleanup is not privileged: it detaches programs and deletes links like the agent")
	}
}

// dockerfileFinalStage returns the destinations the Dockerfile's last
// stage copies to and its ENTRYPOINT.
func dockerfileFinalStage(t *testing.T, path string) (map[string]bool, string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dests, entrypoint := map[string]bool{}, ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			dests, entrypoint = map[string]bool{}, ""
		case "COPY":
			dests[f[len(f)-1]] = true
		case "ENTRYPOINT":
			entrypoint = strings.Trim(strings.TrimSuffix(strings.TrimPrefix(f[1], "["), ","), `"]`)
		}
	}
	return dests, entrypoint
}

// TestDockerfileBuildsLikeMakefile: the image's binaries get the version
// stamps `make build` gives, into variables that exist (-X on a missing
// variable is silently ignored).
func TestDockerfileBuildsLikeMakefile(t *testing.T) {
	stamp := regexp.MustCompile(`-X main\.(\w+)=`)
	names := func(path string) []string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, m := range stamp.FindAllStringSubmatch(string(b), -1) {
			if !slices.Contains(out, m[1]) {
				out = append(out, m[1])
			}
		}
		slices.Sort(out)
		return out
	}
	docker, mk := names("../Dockerfile"), names("../Makefile")
	if len(docker) == 0 || !slices.Equal(docker, mk) {
		t.Errorf("Dockerfile stamps %v, Makefile %v", docker, mk)
	}
	var src bytes.Buffer
	for _, dir := range []string{"../cmd/agent", "../cmd/plugin"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, f := range files {
			b, _ := os.ReadFile(f)
			src.Write(b)
		}
	}
	for _, n := range docker {
		if !regexp.MustCompile(`(?m)^\s*(var\s+)?` + n + `\s+=\s+"`).Match(src.Bytes()) {
			t.Errorf("-X main.%s: no such string variable in cmd/agent or cmd/plugin", n)
		}
	}
}
