// Command image builds the project's container images without a container engine, one per
// command: zerowake-controller and zerowake-gate by default, or the ones -images names (also
// pause and testapp, the sandbox and the workload of the real node in hack/localcluster). Each is a from-scratch image per platform
// holding one static binary, a passwd entry for its non-root user and nothing else (no shell,
// no package manager). For each image it writes an OCI image index as an OCI layout in
// OUT/NAME/, its digest, and an SPDX SBOM per platform from the Go build information of the
// binary; it prints "NAME DIGEST" per image and can push the indexes to a registry.
//
// Builds are reproducible: file times, image times and history come from SOURCE_DATE_EPOCH
// (the commit time), tar entries are written in a fixed order with fixed owners, and the Go
// build is path-independent (-trimpath) and pinned to the baseline instruction sets, so two
// builds of one commit with one Go toolchain give the same digest.
//
// No CA bundle goes into the images: both commands' only TLS peer is the Kubernetes API
// server, verified against the ServiceAccount's ca.crt (or a kubeconfig's CA), never against
// system roots, and a bundle taken from the build machine would tie the digest to that machine.
//
//	go run . -root ../../.. -version v0.1.0 -out ../../../_output/image [-push ghcr.io/zerowake]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Fixed facts of the images that the tests and manifests rely on.
const (
	userID   = 65532
	userName = "nonroot"
)

// imagePackages are the images this command can build, each named after the command it runs,
// with that command's package in the repository.
var imagePackages = map[string]string{
	"zerowake-controller": "./cmd/zerowake-controller",
	"zerowake-gate":       "./cmd/zerowake-gate",
	"pause":               "./hack/pause",
	"testapp":             "./hack/testapp",
}

// defaultImages are the images the project ships.
const defaultImages = "zerowake-controller,zerowake-gate"

type options struct {
	images    []string
	root      string
	version   string
	out       string
	platforms []platform
	epoch     time.Time
	push      string
	source    string
}

type platform struct{ os, arch, variant string }

func (p platform) String() string { return p.os + "/" + p.arch }

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	opts, err := parseFlags(args)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(opts.out); err != nil {
		return err
	}
	if err := os.MkdirAll(opts.out, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "zerowake-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	binaries := map[string][]platformBuild{}
	for _, p := range opts.platforms {
		dir := filepath.Join(work, p.os+"-"+p.arch)
		if err := buildBinaries(ctx, opts, p, dir); err != nil {
			return err
		}
		for _, name := range opts.images {
			binaries[name] = append(binaries[name], platformBuild{platform: p, binary: filepath.Join(dir, name)})
		}
	}
	for _, name := range opts.images {
		digest, err := buildImage(ctx, opts, name, binaries[name])
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		fmt.Println(name, digest)
	}
	return nil
}

// buildImage assembles one image from its binaries, writes its layout, digest and SBOMs to
// OUT/NAME, pushes it when asked, and returns its index digest.
func buildImage(ctx context.Context, opts *options, name string, builds []platformBuild) (string, error) {
	out := filepath.Join(opts.out, name)
	index, err := assemble(opts, name, builds)
	if err != nil {
		return "", err
	}
	digest, err := writeLayout(opts, out, index)
	if err != nil {
		return "", err
	}
	for _, b := range builds {
		if err := writeSBOM(opts, name, out, b); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(out, "digest"), []byte(digest+"\n"), 0o644); err != nil {
		return "", err
	}
	if opts.push != "" {
		pushed, err := push(ctx, opts.push+"/"+name+":"+opts.version, index)
		if err != nil {
			return "", err
		}
		fmt.Fprintln(os.Stderr, "pushed", pushed)
	}
	return digest, nil
}

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	root := fs.String("root", "", "Root of the zerowake repository (the module whose ./cmd/... are built).")
	version := fs.String("version", "", "Version stamped into the binary and the image annotations (git describe).")
	out := fs.String("out", "", "Output directory; replaced. Receives a directory per image (zerowake-controller/, zerowake-gate/) with oci/ (an OCI layout), digest and the SBOMs.")
	platforms := fs.String("platforms", "linux/amd64,linux/arm64", "Comma-separated os/arch list.")
	epoch := fs.String("source-date-epoch", os.Getenv("SOURCE_DATE_EPOCH"), "Seconds since the epoch for every time in the image (default $SOURCE_DATE_EPOCH, else the last commit's time).")
	pushTo := fs.String("push", "", "Registry and path prefix (e.g. ghcr.io/zerowake) to push the images to, as PREFIX/NAME:VERSION.")
	images := fs.String("images", defaultImages, "Comma-separated images to build, from: zerowake-controller, zerowake-gate, pause, testapp.")
	source := fs.String("source", "https://github.com/zerowake/zerowake", "Source repository URL for the image annotations.")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *root == "" || *version == "" || *out == "" {
		return nil, fmt.Errorf("-root, -version and -out are required")
	}
	o := &options{version: *version, push: strings.TrimSuffix(*pushTo, "/"), source: *source}
	for _, name := range strings.Split(*images, ",") {
		name = strings.TrimSpace(name)
		if _, ok := imagePackages[name]; !ok {
			return nil, fmt.Errorf("-images: unknown image %q", name)
		}
		o.images = append(o.images, name)
	}
	for _, name := range o.images {
		// A repository named after one image would give PREFIX/zerowake-controller/zerowake-gate.
		if strings.HasSuffix(o.push, "/"+name) {
			return nil, fmt.Errorf("-push %s: give the registry prefix the images go under (e.g. ghcr.io/zerowake), without an image name", o.push)
		}
	}
	var err error
	if o.root, err = filepath.Abs(*root); err != nil {
		return nil, err
	}
	if o.out, err = filepath.Abs(*out); err != nil {
		return nil, err
	}
	// The output directory is replaced; refuse one that holds the sources.
	if rel, err := filepath.Rel(o.out, o.root); err == nil && !strings.HasPrefix(rel, "..") {
		return nil, fmt.Errorf("-out %s contains the repository; choose a directory below it, e.g. _output/image", o.out)
	}
	for _, s := range strings.Split(*platforms, ",") {
		osName, arch, ok := strings.Cut(strings.TrimSpace(s), "/")
		if !ok || osName != "linux" {
			return nil, fmt.Errorf("platform %q: want linux/ARCH", s)
		}
		p := platform{os: osName, arch: arch}
		if arch == "arm64" {
			p.variant = "v8"
		}
		o.platforms = append(o.platforms, p)
	}
	seconds := strings.TrimSpace(*epoch)
	if seconds == "" {
		out, err := exec.Command("git", "-C", o.root, "log", "-1", "--format=%ct").Output()
		if err != nil {
			return nil, fmt.Errorf("no -source-date-epoch and no commit time from git: %w", err)
		}
		seconds = strings.TrimSpace(string(out))
	}
	n, err := strconv.ParseInt(seconds, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("source date epoch %q: %w", seconds, err)
	}
	o.epoch = time.Unix(n, 0).UTC()
	return o, nil
}

// buildBinaries cross-compiles every image's command for p into dir: static (no cgo),
// path-independent, with the version stamped, and with the microarchitecture levels fixed so
// the builder's environment cannot change the bytes.
func buildBinaries(ctx context.Context, opts *options, p platform, dir string) error {
	ldflags := "-s -w -buildid= -X github.com/zerowake/zerowake/internal/version.version=" + opts.version
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", dir + string(filepath.Separator)}
	for _, name := range opts.images {
		args = append(args, imagePackages[name])
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = opts.root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.os, "GOARCH="+p.arch,
		"GOAMD64=v1", "GOARM64=v8.0", "GOFLAGS=-mod=readonly")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building %s for %s: %w", strings.Join(opts.images, ", "), p, err)
	}
	return nil
}
