package release

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/yaml"
)

// krewPlugin is krew's plugin manifest (krew.googlecontainertools.github.com/v1alpha2 Plugin).
type krewPlugin struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string `json:"version"`
		Homepage         string `json:"homepage"`
		ShortDescription string `json:"shortDescription"`
		Description      string `json:"description"`
		Platforms        []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			URI    string `json:"uri"`
			SHA256 string `json:"sha256"`
			Bin    string `json:"bin"`
			Files  []struct {
				From string `json:"from"`
				To   string `json:"to"`
			} `json:"files"`
		} `json:"platforms"`
	} `json:"spec"`
}

var semver = regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$`)

// TestKrewManifest checks the krew manifest the way krew validates and installs one: the
// fields krew requires, one platform per os/arch, each archive's sha256, the files it copies
// and the binary it links; then the linux/amd64 plugin, installed on a PATH, runs as
// `kubectl zerowake` and reports the release's version.
func TestKrewManifest(t *testing.T) {
	manifestPath := filepath.Join(bundle, "krew", "zerowake.yaml")
	f, err := os.Open(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var p krewPlugin
	if err := yaml.NewYAMLOrJSONDecoder(f, 4096).Decode(&p); err != nil {
		t.Fatal(err)
	}
	if p.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || p.Kind != "Plugin" {
		t.Errorf("apiVersion/kind %s/%s", p.APIVersion, p.Kind)
	}
	if p.Metadata.Name != "zerowake" || p.Metadata.Name+".yaml" != filepath.Base(manifestPath) {
		t.Errorf("plugin name %q must be zerowake and match the file name %s", p.Metadata.Name, filepath.Base(manifestPath))
	}
	if p.Spec.Version != version || !semver.MatchString(p.Spec.Version) {
		t.Errorf("version %q, want %s (semver with a v)", p.Spec.Version, version)
	}
	if p.Spec.ShortDescription == "" || len(p.Spec.ShortDescription) > 50 || p.Spec.Description == "" || !strings.HasPrefix(p.Spec.Homepage, "https://") {
		t.Errorf("descriptions or homepage missing or too long: %+v", p.Spec)
	}

	seen := map[string]bool{}
	for _, pl := range p.Spec.Platforms {
		osArch := pl.Selector.MatchLabels["os"] + "/" + pl.Selector.MatchLabels["arch"]
		if seen[osArch] {
			t.Errorf("platform %s twice", osArch)
		}
		seen[osArch] = true
		u, err := url.Parse(pl.URI)
		if err != nil || u.Scheme != "https" || !strings.HasSuffix(u.Path, ".tar.gz") {
			t.Errorf("%s: uri %q is not an https .tar.gz", osArch, pl.URI)
			continue
		}
		archive := filepath.Join(bundle, path.Base(u.Path))
		if got := sha256File(t, archive); got != pl.SHA256 {
			t.Errorf("%s: sha256 %s, manifest says %s", osArch, got, pl.SHA256)
		}
		if pl.Bin != "kubectl-zerowake" {
			t.Errorf("%s: bin %q", osArch, pl.Bin)
		}
		// Install as krew does: unpack, copy the listed files, then find bin among them.
		unpacked := filepath.Join(t.TempDir(), "unpacked")
		untarGz(t, archive, unpacked)
		installed := filepath.Join(t.TempDir(), "installed")
		for _, file := range pl.Files {
			data, err := os.ReadFile(filepath.Join(unpacked, file.From))
			if err != nil {
				t.Errorf("%s: files.from %q is not in the archive: %v", osArch, file.From, err)
				continue
			}
			info, _ := os.Stat(filepath.Join(unpacked, file.From))
			if err := os.MkdirAll(filepath.Join(installed, file.To), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(installed, file.To, filepath.Base(file.From)), data, info.Mode()); err != nil {
				t.Fatal(err)
			}
		}
		bin := filepath.Join(installed, pl.Bin)
		if info, err := os.Stat(bin); err != nil || info.Mode()&0o111 == 0 {
			t.Errorf("%s: bin %s is not an executable after install: %v", osArch, pl.Bin, err)
			continue
		}
		if osArch == runtime.GOOS+"/"+runtime.GOARCH {
			ctx := testContext(t)
			env := []string{"PATH=" + installed + string(os.PathListSeparator) + os.Getenv("PATH")}
			out, err := run(ctx, t.TempDir(), env, cluster.KubectlPath(), "zerowake", "--version")
			if err != nil || strings.TrimSpace(out) != "kubectl-zerowake "+version {
				t.Errorf("kubectl zerowake --version: %q, %v", out, err)
			}
		}
	}
	for _, want := range []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64"} {
		if !seen[want] {
			t.Errorf("no platform %s in the krew manifest", want)
		}
	}
}

// TestChecksums checks checksums.txt against every file of the bundle.
func TestChecksums(t *testing.T) {
	f, err := os.Open(filepath.Join(bundle, "checksums.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	listed := map[string]bool{}
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		sum, name, ok := strings.Cut(scanner.Text(), "  ")
		if !ok {
			t.Fatalf("checksums.txt line %q", scanner.Text())
		}
		listed[name] = true
		if got := sha256File(t, filepath.Join(bundle, name)); got != sum {
			t.Errorf("%s: sha256 %s, checksums.txt says %s", name, got, sum)
		}
	}
	err = filepath.WalkDir(bundle, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(bundle, p)
		if rel != "checksums.txt" && !listed[filepath.ToSlash(rel)] {
			t.Errorf("%s is not in checksums.txt", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"zerowake-crds.yaml", "zerowake.yaml", "zerowake-gate.yaml", "zerowake-gate-all-namespaces.yaml",
		"krew/zerowake.yaml", "image/zerowake-controller/digest", "image/zerowake-controller/sbom-linux-amd64.spdx.json",
		"image/zerowake-gate/digest", "image/zerowake-gate/sbom-linux-arm64.spdx.json"} {
		if !listed[want] {
			t.Errorf("checksums.txt lacks %s", want)
		}
	}
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func untarGz(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Clean(h.Name)
		if strings.HasPrefix(name, "..") || filepath.IsAbs(name) {
			t.Fatalf("archive entry %q escapes", h.Name)
		}
		target := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				t.Fatal(err)
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(target, data, os.FileMode(h.Mode)&os.ModePerm); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("archive entry %s of type %q", h.Name, h.Typeflag)
		}
	}
}
