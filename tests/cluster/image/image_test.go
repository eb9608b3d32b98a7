package image

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// dockerfile is what the Dockerfile's final stage and its build RUN say.
type dockerfile struct {
	copies     map[string]string // destination in the image -> the package whose binary it is
	user       string
	entrypoint []string
	cmd        []string
	labels     map[string]string
	ldflags    string
	static     bool // CGO_ENABLED=0 and -trimpath
}

// parseDockerfile reads the instructions the image is made of. ARGs are
// substituted with args.
func parseDockerfile(t *testing.T, path string, args map[string]string) dockerfile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	var cur strings.Builder
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		if s, ok := strings.CutSuffix(l, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(l)
		if s := strings.TrimSpace(cur.String()); s != "" {
			lines = append(lines, os.Expand(s, func(k string) string {
				if v, ok := args[k]; ok {
					return v
				}
				return "${" + k + "}"
			}))
		}
		cur.Reset()
	}
	d := dockerfile{copies: map[string]string{}, labels: map[string]string{}}
	outputs := map[string]string{} // /out/NAME -> package
	stage := 0
	for _, l := range lines {
		instr, rest, _ := strings.Cut(l, " ")
		switch strings.ToUpper(instr) {
		case "FROM":
			stage++
		case "ENV":
			if strings.Contains(rest, "CGO_ENABLED=0") {
				d.static = true
			}
		case "RUN":
			for _, m := range regexp.MustCompile(`go build -trimpath -ldflags "\$\{LDFLAGS\}" -o (\S+) (\S+)`).FindAllStringSubmatch(rest, -1) {
				outputs[m[1]] = m[2]
			}
			if m := regexp.MustCompile(`LDFLAGS="([^"]*)"`).FindStringSubmatch(rest); m != nil {
				d.ldflags = m[1]
			}
		case "COPY":
			if stage < 2 {
				continue // the build context, into the build stage
			}
			f := strings.Fields(rest)
			if len(f) != 3 || f[0] != "--from=build" {
				t.Fatalf("Dockerfile: COPY %q: this test knows COPY --from=build SRC DEST only", rest)
			}
			pkg, ok := outputs[f[1]]
			if !ok {
				t.Fatalf("Dockerfile: COPY of %s, which no go build line writes", f[1])
			}
			d.copies[f[2]] = pkg
		case "USER":
			d.user = rest
		case "ENTRYPOINT":
			json.Unmarshal([]byte(rest), &d.entrypoint)
		case "CMD":
			json.Unmarshal([]byte(rest), &d.cmd)
		case "LABEL":
			for _, m := range regexp.MustCompile(`(\S+)="([^"]*)"`).FindAllStringSubmatch(rest, -1) {
				d.labels[m[1]] = m[2]
			}
		}
	}
	if stage != 2 {
		t.Fatalf("Dockerfile has %d stages; this test knows the build + final stage form", stage)
	}
	return d
}

// TestPodvnetImageMatchesDockerfile builds podvnet's image and checks that
// it holds what `docker build` of the Dockerfile would: the same binaries,
// from the same packages, at the same paths, with the same user,
// entrypoint, command and labels, built with the same flags.
func TestPodvnetImageMatchesDockerfile(t *testing.T) {
	const version, commit = "v9.9.9-test", "abc1234"
	want := parseDockerfile(t, "../../../Dockerfile", map[string]string{"VERSION": version, "COMMIT": commit, "TARGETOS": "linux", "TARGETARCH": "amd64"})
	if !want.static {
		t.Error("the Dockerfile no longer builds with CGO_ENABLED=0; Build does")
	}
	if got := LDFlags(version, commit); want.ldflags != got {
		t.Errorf("linker flags: Dockerfile %q, Build %q", want.ldflags, got)
	}

	im := Podvnet(version)
	// The binaries' content does not matter here, their paths and modes do.
	bin := t.TempDir()
	for _, b := range im.Binaries {
		if err := os.WriteFile(filepath.Join(bin, b.Name), []byte("#!"+b.Name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "podvnet.tar")
	if err := im.WriteOCI(bin, out); err != nil {
		t.Fatal(err)
	}
	cfg, files := readOCI(t, out, im.Ref)

	gotCopies := map[string]string{}
	for _, b := range im.Binaries {
		gotCopies[b.Dest] = b.Package
	}
	if !maps.Equal(gotCopies, want.copies) {
		t.Errorf("binaries: Dockerfile copies %v, the builder %v", want.copies, gotCopies)
	}
	for dest := range want.copies {
		if mode, ok := files[strings.TrimPrefix(dest, "/")]; !ok || mode != 0o755 {
			t.Errorf("image file %s: present %v, mode %o; want an executable", dest, ok, mode)
		}
	}
	if len(files) != len(want.copies)+countDirs(want.copies) {
		t.Errorf("image holds %v; the Dockerfile copies only %v", slices.Sorted(maps.Keys(files)), slices.Sorted(maps.Keys(want.copies)))
	}
	if cfg.User != want.user {
		t.Errorf("user: image %q, Dockerfile %q", cfg.User, want.user)
	}
	if !slices.Equal(cfg.Entrypoint, want.entrypoint) || !slices.Equal(cfg.Cmd, want.cmd) {
		t.Errorf("entrypoint/cmd: image %q %q, Dockerfile %q %q", cfg.Entrypoint, cfg.Cmd, want.entrypoint, want.cmd)
	}
	if !maps.Equal(cfg.Labels, want.labels) {
		t.Errorf("labels: image %v, Dockerfile %v", cfg.Labels, want.labels)
	}
	// BuildKit adds only PATH to a scratch image's environment.
	if !slices.Equal(cfg.Env, []string{DefaultPath}) {
		t.Errorf("env: %q, want BuildKit's default %q", cfg.Env, DefaultPath)
	}
}

type imageConfig struct {
	User       string
	Entrypoint []string
	Cmd        []string
	Env        []string
	Labels     map[string]string
}

// readOCI unpacks the tarball, checks that the layout names ref as
// containerd reads it, and returns the config and the layer's files and
// directories with their modes.
func readOCI(t *testing.T, tarball, ref string) (imageConfig, map[string]int64) {
	t.Helper()
	dir := t.TempDir()
	untar(t, tarball, dir)
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 || m.Manifests[0].Annotations["io.containerd.image.name"] != ref {
		t.Fatalf("index.json names %v, want one image named %s", m.Manifests, ref)
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture == "" {
		t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v; want one", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]int64{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s owned by %d:%d, want root", h.Name, h.Uid, h.Gid)
		}
		files[strings.TrimSuffix(h.Name, "/")] = h.Mode
	}
	c := cf.Config
	return imageConfig{User: c.User, Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, Labels: c.Labels}, files
}

// countDirs counts the distinct parent directories of the paths.
func countDirs(paths map[string]string) int {
	dirs := map[string]bool{}
	for p := range paths {
		for d := filepath.Dir(p); d != "/"; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	return len(dirs)
}

func untar(t *testing.T, file, dir string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, h.Name)
		if h.Typeflag == tar.TypeDir {
			os.MkdirAll(p, 0o755)
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
