package main

import (
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
)

// SPDX 2.3 JSON, the parts this SBOM uses.
type spdxDocument struct {
	SPDXVersion       string             `json:"spdxVersion"`
	DataLicense       string             `json:"dataLicense"`
	SPDXID            string             `json:"SPDXID"`
	Name              string             `json:"name"`
	DocumentNamespace string             `json:"documentNamespace"`
	CreationInfo      spdxCreationInfo   `json:"creationInfo"`
	Packages          []spdxPackage      `json:"packages"`
	Relationships     []spdxRelationship `json:"relationships"`
}

type spdxCreationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

type spdxPackage struct {
	Name             string            `json:"name"`
	SPDXID           string            `json:"SPDXID"`
	VersionInfo      string            `json:"versionInfo,omitempty"`
	DownloadLocation string            `json:"downloadLocation"`
	FilesAnalyzed    bool              `json:"filesAnalyzed"`
	Checksums        []spdxChecksum    `json:"checksums,omitempty"`
	ExternalRefs     []spdxExternalRef `json:"externalRefs,omitempty"`
	PrimaryPurpose   string            `json:"primaryPackagePurpose,omitempty"`
}

type spdxChecksum struct {
	Algorithm string `json:"algorithm"`
	Value     string `json:"checksumValue"`
}

type spdxExternalRef struct {
	Category string `json:"referenceCategory"`
	Type     string `json:"referenceType"`
	Locator  string `json:"referenceLocator"`
}

type spdxRelationship struct {
	Element string `json:"spdxElementId"`
	Type    string `json:"relationshipType"`
	Related string `json:"relatedSpdxElement"`
}

var spdxIDUnsafe = regexp.MustCompile(`[^A-Za-z0-9.-]+`)

func spdxID(kind, name string) string {
	return "SPDXRef-" + kind + "-" + spdxIDUnsafe.ReplaceAllString(name, "-")
}

// writeSBOM writes dir/sbom-OS-ARCH.spdx.json for one platform's binary of the command name,
// listing the Go modules linked into it as the Go toolchain recorded them (what `go version -m`
// prints): the binary, the toolchain, and every dependency module with its version and module
// checksum.
func writeSBOM(opts *options, name, dir string, b platformBuild) error {
	info, err := buildinfo.ReadFile(b.binary)
	if err != nil {
		return fmt.Errorf("reading the build information of %s: %w", b.binary, err)
	}
	data, err := os.ReadFile(b.binary)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	binarySHA := hex.EncodeToString(sum[:])

	root := spdxPackage{
		Name: info.Main.Path + "/cmd/" + name, SPDXID: spdxID("Package", name),
		VersionInfo: opts.version, DownloadLocation: opts.source, PrimaryPurpose: "APPLICATION",
		Checksums:    []spdxChecksum{{Algorithm: "SHA256", Value: binarySHA}},
		ExternalRefs: []spdxExternalRef{purl(info.Main.Path, opts.version)},
	}
	doc := spdxDocument{
		SPDXVersion: "SPDX-2.3", DataLicense: "CC0-1.0", SPDXID: "SPDXRef-DOCUMENT",
		Name:              fmt.Sprintf("%s-%s-%s-%s", name, opts.version, b.platform.os, b.platform.arch),
		DocumentNamespace: fmt.Sprintf("%s/spdx/%s/%s/%s-%s/%s", opts.source, name, opts.version, b.platform.os, b.platform.arch, binarySHA),
		CreationInfo: spdxCreationInfo{
			Created:  opts.epoch.Format("2006-01-02T15:04:05Z"),
			Creators: []string{"Tool: zerowake-hack-tools-image", "Organization: zerowake"},
		},
		Packages:      []spdxPackage{root},
		Relationships: []spdxRelationship{{Element: "SPDXRef-DOCUMENT", Type: "DESCRIBES", Related: root.SPDXID}},
	}
	toolchain := spdxPackage{
		Name: "go", SPDXID: spdxID("Package", "go-toolchain"), VersionInfo: info.GoVersion,
		DownloadLocation: "https://go.dev/dl/", PrimaryPurpose: "LIBRARY",
		ExternalRefs: []spdxExternalRef{purl("stdlib", info.GoVersion)},
	}
	doc.Packages = append(doc.Packages, toolchain)
	doc.Relationships = append(doc.Relationships, spdxRelationship{Element: root.SPDXID, Type: "DEPENDS_ON", Related: toolchain.SPDXID})
	for _, dep := range info.Deps {
		m := dep
		if dep.Replace != nil {
			m = dep.Replace
		}
		p := modulePackage(m)
		doc.Packages = append(doc.Packages, p)
		doc.Relationships = append(doc.Relationships, spdxRelationship{Element: root.SPDXID, Type: "DEPENDS_ON", Related: p.SPDXID})
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dir, fmt.Sprintf("sbom-%s-%s.spdx.json", b.platform.os, b.platform.arch))
	return os.WriteFile(path, append(out, '\n'), 0o644)
}

func modulePackage(m *debug.Module) spdxPackage {
	return spdxPackage{
		Name: m.Path, SPDXID: spdxID("Package", m.Path+"-"+m.Version), VersionInfo: m.Version,
		DownloadLocation: "https://proxy.golang.org/" + escapeModulePath(m.Path) + "/@v/" + m.Version + ".zip",
		PrimaryPurpose:   "LIBRARY",
		ExternalRefs:     []spdxExternalRef{purl(m.Path, m.Version)},
	}
}

func purl(path, version string) spdxExternalRef {
	return spdxExternalRef{Category: "PACKAGE-MANAGER", Type: "purl", Locator: "pkg:golang/" + path + "@" + version}
}

// escapeModulePath writes upper-case letters as the module proxy expects them ("!" and the
// lower-case letter), so the download location is a real URL.
func escapeModulePath(path string) string {
	var b strings.Builder
	for _, r := range path {
		if 'A' <= r && r <= 'Z' {
			b.WriteByte('!')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}
