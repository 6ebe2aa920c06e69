package main

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gcrname "github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// fakeBuilds stands in for the cross-compiled commands: assembling does not look inside.
func fakeBuilds(t *testing.T, name string) []platformBuild {
	t.Helper()
	var builds []platformBuild
	for _, p := range []platform{{os: "linux", arch: "amd64"}, {os: "linux", arch: "arm64", variant: "v8"}} {
		path := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(path, []byte(name+" for "+p.String()), 0o755); err != nil {
			t.Fatal(err)
		}
		builds = append(builds, platformBuild{platform: p, binary: path})
	}
	return builds
}

func testOptions(t *testing.T) *options {
	return &options{version: "v0.0.0-test", out: t.TempDir(), epoch: time.Unix(1700000000, 0).UTC(), source: "https://example.com/zerowake"}
}

// Two assemblies of the same inputs give the same index, and a different epoch a different one:
// the times in the image come from the epoch alone.
func TestAssembleIsDeterministic(t *testing.T) {
	builds := fakeBuilds(t, "zerowake-controller")
	opts := testOptions(t)
	first, err := assemble(opts, "zerowake-controller", builds)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // a wall-clock time in the image would now differ
	second, err := assemble(opts, "zerowake-controller", builds)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := first.Digest()
	d2, _ := second.Digest()
	if d1 != d2 {
		t.Fatalf("same inputs, different digests: %s %s", d1, d2)
	}
	opts.epoch = opts.epoch.Add(time.Second)
	third, err := assemble(opts, "zerowake-controller", builds)
	if err != nil {
		t.Fatal(err)
	}
	if d3, _ := third.Digest(); d3 == d1 {
		t.Fatalf("another epoch, same digest %s", d3)
	}
}

// The index pushes to a registry and reads back with the same digest, platforms and config,
// the gate's as its own image.
func TestPush(t *testing.T) {
	server := httptest.NewServer(registry.New())
	defer server.Close()
	opts := testOptions(t)
	const name = "zerowake-gate"
	repo := strings.TrimPrefix(server.URL, "http://") + "/zerowake/" + name
	index, err := assemble(opts, name, fakeBuilds(t, name))
	if err != nil {
		t.Fatal(err)
	}
	pushed, err := push(t.Context(), repo+":"+opts.version, index)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := index.Digest()
	if !strings.HasSuffix(pushed, "@"+want.String()) {
		t.Fatalf("pushed %s, want the digest %s", pushed, want)
	}
	ref, err := gcrname.ParseReference(repo + ":" + opts.version)
	if err != nil {
		t.Fatal(err)
	}
	got, err := remote.Index(ref)
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := got.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := got.Digest(); d != want || len(manifest.Manifests) != 2 {
		t.Fatalf("read back %s with %d manifests", d, len(manifest.Manifests))
	}
	if cfg := imageConfig(t, got, manifest.Manifests[1].Digest); cfg.Architecture != "arm64" || cfg.Config.User != "65532:65532" || cfg.Config.Entrypoint[0] != "/"+name {
		t.Fatalf("config %+v", cfg.Config)
	}
}

// Each image runs its own command: the gate's entrypoint is /zerowake-gate, its index is titled
// after it, and its digest is not the controller's.
func TestAssembleNamesEntrypointAfterCommand(t *testing.T) {
	opts := testOptions(t)
	controller, err := assemble(opts, "zerowake-controller", fakeBuilds(t, "zerowake-controller"))
	if err != nil {
		t.Fatal(err)
	}
	gate, err := assemble(opts, "zerowake-gate", fakeBuilds(t, "zerowake-gate"))
	if err != nil {
		t.Fatal(err)
	}
	dc, _ := controller.Digest()
	dg, _ := gate.Digest()
	if dc == dg {
		t.Fatalf("controller and gate share the digest %s", dc)
	}
	manifest, err := gate.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if cfg := imageConfig(t, gate, manifest.Manifests[0].Digest); len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != "/zerowake-gate" {
		t.Errorf("gate config %+v", cfg.Config)
	}
	if title := manifest.Annotations["org.opencontainers.image.title"]; title != "zerowake-gate" {
		t.Errorf("gate index title %q", title)
	}
}

// -push takes the prefix both images go under; a repository named after an image is refused
// rather than nesting the other image below it.
func TestPushPrefix(t *testing.T) {
	base := []string{"-root", t.TempDir(), "-version", "v0.0.0-test", "-out", t.TempDir(), "-source-date-epoch", "1700000000"}
	if o, err := parseFlags(append(base, "-push", "localhost:5000/zerowake/")); err != nil || o.push != "localhost:5000/zerowake" {
		t.Errorf("prefix: %+v, %v", o, err)
	}
	if _, err := parseFlags(append(base, "-push", "ghcr.io/you/zerowake-controller")); err == nil {
		t.Error("a repository named after the controller image was taken as a prefix")
	}
}

// imageConfig returns the config of the index's image with the given digest.
func imageConfig(t *testing.T, index v1.ImageIndex, digest v1.Hash) *v1.ConfigFile {
	t.Helper()
	img, err := index.Image(digest)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestImagesFlag(t *testing.T) {
	base := []string{"-root", t.TempDir(), "-version", "v1", "-out", t.TempDir(), "-source-date-epoch", "0"}
	opts, err := parseFlags(base)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(opts.images, ","); got != defaultImages {
		t.Errorf("default images: %s, want %s", got, defaultImages)
	}
	opts, err = parseFlags(append(base, "-images", "pause, testapp"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(opts.images, ","); got != "pause,testapp" {
		t.Errorf("-images pause,testapp: got %s", got)
	}
	if _, err := parseFlags(append(base, "-images", "nginx")); err == nil {
		t.Error("-images nginx: no error for an image this command cannot build")
	}
}
