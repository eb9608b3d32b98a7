// Package image builds the container images of the test cluster without a
// Docker engine: OCI image layout tarballs (google/go-containerregistry)
// that `ctr images import` loads into a node's containerd. Three images:
// podvnet's own, built as the Dockerfile builds it (a test holds the two
// equal); a pause image for pod sandboxes; and the probe image the tests
// run as workloads.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// References the test cluster uses. The pause image takes the name every
// kubelet/containerd expects for its sandbox, so that manifests naming it
// (deploy/uninstall) find it on the node as they would on a real one.
const (
	PodvnetRef = "localhost/podvnet:cluster-test"
	PauseRef   = "registry.k8s.io/pause:3.10"
	ProbeRef   = "localhost/podvnet-probe:cluster-test"
)

// DefaultPath is the PATH BuildKit puts in the config of an image built
// FROM scratch; `kubectl exec POD -- podvnet-agent ...` resolves with it.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Binary is a static Go binary the image holds.
type Binary struct {
	Package string // as `go build` names it, relative to the repository
	Name    string // the file `go build -o` writes
	Dest    string // its path in the image
}

// Image is what one image holds: files from a build directory, and the
// config.
type Image struct {
	Ref        string
	Binaries   []Binary
	User       string
	Entrypoint []string
	Cmd        []string
	Env        []string
	Labels     map[string]string
}

// LDFlags are the linker flags of podvnet's binaries: the Makefile's, as the
// Dockerfile repeats them.
func LDFlags(version, commit string) string {
	return fmt.Sprintf("-s -w -X main.version=%s -X main.commit=%s -X main.buildVersion=%s", version, commit, version)
}

// Podvnet is podvnet's image, the Dockerfile's final stage.
func Podvnet(version string) Image {
	return Image{
		Ref: PodvnetRef,
		Binaries: []Binary{
			{Package: "./cmd/agent", Name: "podvnet-agent", Dest: "/usr/local/bin/podvnet-agent"},
			{Package: "./cmd/plugin", Name: "podvnet", Dest: "/opt/podvnet/bin/podvnet"},
		},
		User:       "0:0",
		Entrypoint: []string{"/usr/local/bin/podvnet-agent"},
		Cmd:        []string{"run"},
		Env:        []string{DefaultPath},
		Labels: map[string]string{
			"org.opencontainers.image.title":       "podvnet",
			"org.opencontainers.image.description": "Kubernetes pods on the node's Azure VNet, with an eBPF data path",
			"org.opencontainers.image.source":      "https://github.com/podvnet/podvnet",
			"org.opencontainers.image.version":     version,
		},
	}
}

// Pause is the sandbox image.
func Pause() Image {
	return Image{
		Ref:        PauseRef,
		Binaries:   []Binary{{Package: "./tests/cluster/cmd/pause", Name: "pause", Dest: "/pause"}},
		User:       "65535:65535",
		Entrypoint: []string{"/pause"},
	}
}

// Probe is the test workload's image.
func Probe() Image {
	return Image{
		Ref:        ProbeRef,
		Binaries:   []Binary{{Package: "./tests/cluster/cmd/probe", Name: "probe", Dest: "/usr/local/bin/probe"}},
		Entrypoint: []string{"/usr/local/bin/probe"},
		Cmd:        []string{"serve"},
		Env:        []string{DefaultPath},
	}
}

// All are the images the test cluster imports on every node.
func All(version string) []Image { return []Image{Podvnet(version), Pause(), Probe()} }

// Build compiles the images' binaries into dir as the Dockerfile does:
// static (CGO_ENABLED=0), -trimpath, the Makefile's linker flags.
func Build(ctx context.Context, repo, dir, version, commit string, images ...Image) error {
	for _, im := range images {
		for _, b := range im.Binaries {
			cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", LDFlags(version, commit), "-o", filepath.Join(dir, b.Name), b.Package)
			cmd.Dir = repo
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("go build %s: %w\n%s", b.Package, err, out)
			}
		}
	}
	return nil
}

// WriteOCI writes the image, with the binaries from binDir, as an OCI image
// layout tarball to out.
func (im Image) WriteOCI(binDir, out string) error {
	layer, err := im.layer(binDir)
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), static.NewLayer(layer, types.OCIUncompressedLayer))
	if err != nil {
		return err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config = v1.Config{User: im.User, Entrypoint: im.Entrypoint, Cmd: im.Cmd, Env: im.Env, Labels: im.Labels}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}

	dir, err := os.MkdirTemp(filepath.Dir(out), ".oci-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	tag := im.Ref[strings.LastIndex(im.Ref, ":")+1:]
	// containerd names the imported image after io.containerd.image.name.
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          im.Ref,
		"org.opencontainers.image.ref.name": tag,
	})); err != nil {
		return fmt.Errorf("write %s: %w", im.Ref, err)
	}
	return tarDir(dir, out)
}

// layer is one uncompressed tar of the binaries and their parent
// directories, root-owned, with fixed times so that the digest depends on
// the content only.
func (im Image) layer(binDir string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	var files []Binary
	for _, b := range im.Binaries {
		for d := path.Dir(b.Dest); d != "/"; d = path.Dir(d) {
			dirs[strings.TrimPrefix(d, "/")+"/"] = true
		}
		files = append(files, b)
	}
	names := make([]string, 0, len(dirs))
	for d := range dirs {
		names = append(names, d)
	}
	sort.Strings(names)
	for _, d := range names {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	for _, b := range files {
		data, err := os.ReadFile(filepath.Join(binDir, b.Name))
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", im.Ref, err)
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(b.Dest, "/"), Mode: 0o755, Size: int64(len(data)), Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// tarDir writes the files under dir to a tar file at out.
func tarDir(dir, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// BuildAll builds every image of All into dir (binaries in dir/bin) and
// returns the tarballs' paths, one per image, in All's order.
func BuildAll(ctx context.Context, repo, dir, version, commit string) ([]string, error) {
	images := All(version)
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return nil, err
	}
	if err := Build(ctx, repo, bin, version, commit, images...); err != nil {
		return nil, err
	}
	var paths []string
	for _, im := range images {
		p := filepath.Join(dir, im.FileName())
		if err := im.WriteOCI(bin, p); err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// FileName is the tarball's name in a BuildAll directory.
func (im Image) FileName() string {
	name := im.Ref[strings.LastIndex(im.Ref, "/")+1:]
	return strings.ReplaceAll(name, ":", "_") + ".oci.tar"
}
