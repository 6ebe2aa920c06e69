package main

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// fakeBuilds stands in for the cross-compiled controllers: assembling does not look inside.
func fakeBuilds(t *testing.T) []platformBuild {
	t.Helper()
	var builds []platformBuild
	for _, p := range []platform{{os: "linux", arch: "amd64"}, {os: "linux", arch: "arm64", variant: "v8"}} {
		path := filepath.Join(t.TempDir(), binaryName)
		if err := os.WriteFile(path, []byte("controller for "+p.String()), 0o755); err != nil {
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
	builds := fakeBuilds(t)
	opts := testOptions(t)
	first, err := assemble(opts, builds)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // a wall-clock time in the image would now differ
	second, err := assemble(opts, builds)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := first.Digest()
	d2, _ := second.Digest()
	if d1 != d2 {
		t.Fatalf("same inputs, different digests: %s %s", d1, d2)
	}
	opts.epoch = opts.epoch.Add(time.Second)
	third, err := assemble(opts, builds)
	if err != nil {
		t.Fatal(err)
	}
	if d3, _ := third.Digest(); d3 == d1 {
		t.Fatalf("another epoch, same digest %s", d3)
	}
}

// The index pushes to a registry and reads back with the same digest, platforms and config.
func TestPush(t *testing.T) {
	server := httptest.NewServer(registry.New())
	defer server.Close()
	opts := testOptions(t)
	opts.push = strings.TrimPrefix(server.URL, "http://") + "/zerowake/controller"
	index, err := assemble(opts, fakeBuilds(t))
	if err != nil {
		t.Fatal(err)
	}
	pushed, err := push(t.Context(), opts, index)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := index.Digest()
	if !strings.HasSuffix(pushed, "@"+want.String()) {
		t.Fatalf("pushed %s, want the digest %s", pushed, want)
	}
	ref, err := name.ParseReference(opts.push + ":" + opts.version)
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
	img, err := got.Image(manifest.Manifests[1].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Architecture != "arm64" || cfg.Config.User != "65532:65532" || cfg.Config.Entrypoint[0] != "/"+binaryName {
		t.Fatalf("config %+v", cfg.Config)
	}
}
