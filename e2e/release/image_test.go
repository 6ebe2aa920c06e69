package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// The parts of the OCI image layout and image spec these tests read. They are decoded here
// by hand, not with the library that wrote them, so that the check is independent of it.
type ociDescriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *ociPlatform      `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type ociPlatform struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant,omitempty"`
}

type ociIndex struct {
	MediaType   string            `json:"mediaType"`
	Manifests   []ociDescriptor   `json:"manifests"`
	Annotations map[string]string `json:"annotations"`
}

type ociManifest struct {
	MediaType string          `json:"mediaType"`
	Config    ociDescriptor   `json:"config"`
	Layers    []ociDescriptor `json:"layers"`
}

type ociConfig struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant"`
	Config       struct {
		User       string   `json:"User"`
		Entrypoint []string `json:"Entrypoint"`
		Cmd        []string `json:"Cmd"`
		Env        []string `json:"Env"`
		WorkingDir string   `json:"WorkingDir"`
	} `json:"config"`
	RootFS struct {
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// platformImage is one platform's image, read from a layout.
type platformImage struct {
	platform ociPlatform
	config   ociConfig
	layers   []ociDescriptor
}

// blob reads a blob of the layout and checks that its content has its digest.
func blob(t *testing.T, layout, digest string) []byte {
	t.Helper()
	hexDigest, ok := strings.CutPrefix(digest, "sha256:")
	if !ok {
		t.Fatalf("digest %q is not sha256", digest)
	}
	data, err := os.ReadFile(filepath.Join(layout, "blobs", "sha256", hexDigest))
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != hexDigest {
		t.Fatalf("blob %s does not have its digest", digest)
	}
	return data
}

func decodeBlob(t *testing.T, layout, digest string, into any) {
	t.Helper()
	if err := json.Unmarshal(blob(t, layout, digest), into); err != nil {
		t.Fatalf("blob %s: %v", digest, err)
	}
}

// readLayout returns the digest of the layout's one index and its images.
func readLayout(t *testing.T, layout string) (string, []platformImage) {
	t.Helper()
	var top ociIndex
	data, err := os.ReadFile(filepath.Join(layout, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &top); err != nil {
		t.Fatal(err)
	}
	if len(top.Manifests) != 1 || top.Manifests[0].MediaType != "application/vnd.oci.image.index.v1+json" {
		t.Fatalf("layout index.json should name one image index: %+v", top.Manifests)
	}
	indexDesc := top.Manifests[0]
	if ref := indexDesc.Annotations["org.opencontainers.image.ref.name"]; ref != version {
		t.Errorf("layout ref.name = %q, want %q", ref, version)
	}
	var index ociIndex
	decodeBlob(t, layout, indexDesc.Digest, &index)
	var images []platformImage
	for _, d := range index.Manifests {
		if d.MediaType != "application/vnd.oci.image.manifest.v1+json" || d.Platform == nil {
			t.Fatalf("index entry %+v is not an OCI image manifest with a platform", d)
		}
		var m ociManifest
		decodeBlob(t, layout, d.Digest, &m)
		var cfg ociConfig
		decodeBlob(t, layout, m.Config.Digest, &cfg)
		images = append(images, platformImage{platform: *d.Platform, config: cfg, layers: m.Layers})
	}
	return indexDesc.Digest, images
}

// layerFiles returns the entries of the image's layers, keyed by path without a leading slash,
// with the content of regular files.
type layerEntry struct {
	header *tar.Header
	data   []byte
}

func layerFiles(t *testing.T, layout string, img platformImage) map[string]layerEntry {
	t.Helper()
	files := map[string]layerEntry{}
	for _, l := range img.layers {
		if l.MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" {
			t.Fatalf("layer media type %q", l.MediaType)
		}
		gz, err := gzip.NewReader(bytes.NewReader(blob(t, layout, l.Digest)))
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(gz)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[strings.TrimPrefix(filepath.Clean("/"+h.Name), "/")] = layerEntry{header: h, data: data}
		}
	}
	return files
}

// TestImageFromOutside checks each image as a registry or a kubelet sees it: an index for
// linux/amd64 and linux/arm64, a numeric non-root user, the image's command as entrypoint,
// nothing else to execute (no shell), static binaries built for their platform and stamped with
// the version, and SBOMs that list exactly the Go modules linked into each binary.
func TestImageFromOutside(t *testing.T) {
	for _, img := range releasedImages {
		t.Run(img.command, func(t *testing.T) {
			checkImageFromOutside(t, img)
		})
	}
}

func checkImageFromOutside(t *testing.T, released *releasedImage) {
	layout := filepath.Join(released.dir(), "oci")
	indexDigest, images := readLayout(t, layout)
	if indexDigest != released.digest {
		t.Errorf("layout index %s, but %s/digest says %s", indexDigest, released.command, released.digest)
	}
	var platforms []string
	for _, img := range images {
		platforms = append(platforms, img.platform.OS+"/"+img.platform.Architecture)
	}
	sort.Strings(platforms)
	if !slices.Equal(platforms, []string{"linux/amd64", "linux/arm64"}) {
		t.Fatalf("platforms %v, want linux/amd64 and linux/arm64", platforms)
	}
	command := released.command
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	for _, img := range images {
		arch := img.platform.Architecture
		t.Run(arch, func(t *testing.T) {
			cfg := img.config
			if cfg.OS != "linux" || cfg.Architecture != arch {
				t.Errorf("config platform %s/%s", cfg.OS, cfg.Architecture)
			}
			if cfg.Config.User != "65532:65532" {
				t.Errorf("user %q, want the numeric non-root 65532:65532 (runAsNonRoot checks it without /etc/passwd)", cfg.Config.User)
			}
			if !slices.Equal(cfg.Config.Entrypoint, []string{"/" + command}) || len(cfg.Config.Cmd) != 0 {
				t.Errorf("entrypoint %q cmd %q, want [/%s] and no cmd", cfg.Config.Entrypoint, cfg.Config.Cmd, command)
			}
			if len(img.layers) != len(cfg.RootFS.DiffIDs) {
				t.Errorf("%d layers but %d diff_ids", len(img.layers), len(cfg.RootFS.DiffIDs))
			}
			files := layerFiles(t, layout, img)
			var names []string
			for name, e := range files {
				names = append(names, name)
				// No shell, and nothing executable but the command.
				if e.header.Typeflag == tar.TypeReg && e.header.Mode&0o111 != 0 && name != command {
					t.Errorf("executable %s in the image", name)
				}
				if e.header.Typeflag == tar.TypeSymlink || e.header.Typeflag == tar.TypeLink {
					t.Errorf("link %s in the image", name)
				}
			}
			sort.Strings(names)
			for _, shell := range []string{"bin/sh", "bin/bash", "bin/busybox", "usr/bin/sh"} {
				if _, ok := files[shell]; ok {
					t.Errorf("image has a shell: %s", shell)
				}
			}
			if !strings.Contains(string(files["etc/passwd"].data), ":65532:65532:") {
				t.Errorf("/etc/passwd has no entry for 65532: %q", files["etc/passwd"].data)
			}
			bin, ok := files[command]
			if !ok || bin.header.Mode&0o111 == 0 {
				t.Fatalf("no executable /%s; files %v", command, names)
			}
			f, err := elf.NewFile(bytes.NewReader(bin.data))
			if err != nil {
				t.Fatal(err)
			}
			if f.Machine != machines[arch] {
				t.Errorf("binary is for %v, want %v", f.Machine, machines[arch])
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					t.Errorf("binary is dynamically linked; the image has no libc")
				}
			}
			binaryPath := filepath.Join(t.TempDir(), command)
			if err := os.WriteFile(binaryPath, bin.data, 0o755); err != nil {
				t.Fatal(err)
			}
			info, err := buildinfo.ReadFile(binaryPath)
			if err != nil {
				t.Fatal(err)
			}
			if want := info.Main.Path + "/cmd/" + command; info.Path != want {
				t.Errorf("binary built from %s, want %s", info.Path, want)
			}
			settings := map[string]string{}
			for _, s := range info.Settings {
				settings[s.Key] = s.Value
			}
			if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" || settings["GOARCH"] != arch {
				t.Errorf("build settings %v: want CGO_ENABLED=0, -trimpath, GOARCH=%s", settings, arch)
			}
			// -trimpath leaves -ldflags out of the build information, so the version stamp is
			// checked by running the amd64 binary (TestImageRunsController, TestImageRunsGate).
			checkSBOM(t, filepath.Join(released.dir(), "sbom-linux-"+arch+".spdx.json"), info)
		})
	}
}

// checkSBOM checks an SPDX document against the Go build information of the binary it
// describes: every module in the binary is listed with its version, and nothing else is.
func checkSBOM(t *testing.T, path string, info *buildinfo.BuildInfo) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		SPDXVersion string `json:"spdxVersion"`
		Packages    []struct {
			Name         string `json:"name"`
			VersionInfo  string `json:"versionInfo"`
			ExternalRefs []struct {
				Type    string `json:"referenceType"`
				Locator string `json:"referenceLocator"`
			} `json:"externalRefs"`
		} `json:"packages"`
		Relationships []struct {
			Type string `json:"relationshipType"`
		} `json:"relationships"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.SPDXVersion != "SPDX-2.3" {
		t.Errorf("spdxVersion %q", doc.SPDXVersion)
	}
	listed := map[string]bool{}
	for _, p := range doc.Packages {
		for _, r := range p.ExternalRefs {
			if r.Type == "purl" {
				listed[r.Locator] = true
			}
		}
	}
	want := map[string]bool{"pkg:golang/stdlib@" + info.GoVersion: true, "pkg:golang/" + info.Main.Path + "@" + version: true}
	for _, d := range info.Deps {
		m := d
		if d.Replace != nil {
			m = d.Replace
		}
		want[fmt.Sprintf("pkg:golang/%s@%s", m.Path, m.Version)] = true
	}
	for p := range want {
		if !listed[p] {
			t.Errorf("SBOM %s lacks %s", filepath.Base(path), p)
		}
	}
	for p := range listed {
		if !want[p] {
			t.Errorf("SBOM %s lists %s, which is not in the binary", filepath.Base(path), p)
		}
	}
	if !listed["pkg:golang/k8s.io/client-go@"+moduleVersion(info, "k8s.io/client-go")] || len(info.Deps) < 20 {
		t.Errorf("SBOM %s: client-go missing or too few modules (%d)", filepath.Base(path), len(info.Deps))
	}
}

func moduleVersion(info *buildinfo.BuildInfo, path string) string {
	for _, d := range info.Deps {
		if d.Path == path {
			return d.Version
		}
	}
	return "(missing)"
}

// TestImageReproducible builds the images a second time, into another directory, and expects
// the same digests and SBOMs.
func TestImageReproducible(t *testing.T) {
	ctx := testContext(t)
	out := filepath.Join(t.TempDir(), "image")
	stdout, err := run(ctx, filepath.Join(root, "hack", "tools", "image"), []string{"SOURCE_DATE_EPOCH=" + epoch},
		"go", "run", ".", "-root", root, "-version", version, "-out", out)
	if err != nil {
		t.Fatal(err)
	}
	// One "NAME DIGEST" line per image.
	again := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		name, d, _ := strings.Cut(line, " ")
		again[name] = d
	}
	if len(again) != len(releasedImages) {
		t.Errorf("the second build printed %q, want a line for each of %d images", stdout, len(releasedImages))
	}
	for _, img := range releasedImages {
		t.Logf("%s: %s (bundle), %s (second build)", img.command, img.digest, again[img.command])
		if again[img.command] != img.digest {
			t.Errorf("%s: second build of the same tree: %s, first: %s", img.command, again[img.command], img.digest)
		}
		for _, sbom := range []string{"sbom-linux-amd64.spdx.json", "sbom-linux-arm64.spdx.json"} {
			a, _ := os.ReadFile(filepath.Join(img.dir(), sbom))
			b, _ := os.ReadFile(filepath.Join(out, img.command, sbom))
			if len(a) == 0 || !bytes.Equal(a, b) {
				t.Errorf("%s/%s differs between two builds", img.command, sbom)
			}
		}
	}
}
