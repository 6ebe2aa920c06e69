package main

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// platformBuild is one platform's binary of an image's command.
type platformBuild struct {
	platform platform
	binary   string
}

// assemble builds the image name (running the binary of the same name) for each platform and
// the index that lists them.
func assemble(opts *options, name string, builds []platformBuild) (v1.ImageIndex, error) {
	created := v1.Time{Time: opts.epoch}
	annotations := map[string]string{
		"org.opencontainers.image.title":   name,
		"org.opencontainers.image.version": opts.version,
		"org.opencontainers.image.created": opts.epoch.Format("2006-01-02T15:04:05Z"),
		"org.opencontainers.image.source":  opts.source,
	}
	index := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var addenda []mutate.IndexAddendum
	for _, b := range builds {
		img, err := platformImage(opts, name, b, created, annotations)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.platform, err)
		}
		addenda = append(addenda, mutate.IndexAddendum{
			Add: img,
			Descriptor: v1.Descriptor{
				Platform: &v1.Platform{OS: b.platform.os, Architecture: b.platform.arch, Variant: b.platform.variant},
			},
		})
	}
	index = mutate.AppendManifests(index, addenda...)
	return mutate.Annotations(index, annotations).(v1.ImageIndex), nil
}

func platformImage(opts *options, name string, b platformBuild, created v1.Time, annotations map[string]string) (v1.Image, error) {
	binary, err := os.ReadFile(b.binary)
	if err != nil {
		return nil, err
	}
	rootfs, err := rootfsTar(name, binary, opts)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(rootfs)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: created, CreatedBy: "hack/tools/image: " + name + " " + opts.version, Comment: "static binary and passwd entry"},
	})
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Variant = b.platform.os, b.platform.arch, b.platform.variant
	cfg.Created = created
	cfg.Author = ""
	cfg.Config = v1.Config{
		// Numeric, so that runAsNonRoot can verify it without reading /etc/passwd.
		User:       fmt.Sprintf("%d:%d", userID, userID),
		Entrypoint: []string{"/" + name},
		WorkingDir: "/",
		Labels:     annotations,
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, err
	}
	return mutate.Annotations(img, annotations).(v1.Image), nil
}

// rootfsTar is the image's only layer: /etc/passwd and /etc/group naming the non-root user,
// and the binary as /NAME. Entries are in a fixed order with fixed owners, modes and times.
func rootfsTar(name string, binary []byte, opts *options) ([]byte, error) {
	passwd := fmt.Sprintf("root:x:0:0:root:/:/sbin/nologin\n%s:x:%d:%d:%s:/:/sbin/nologin\n", userName, userID, userID, userName)
	group := fmt.Sprintf("root:x:0:\n%s:x:%d:\n", userName, userID)
	entries := []struct {
		name string
		mode int64
		data []byte
		dir  bool
	}{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: name, mode: 0o755, data: binary},
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: opts.epoch, Format: tar.FormatPAX, Typeflag: tar.TypeReg, Size: int64(len(e.data))}
		if e.dir {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeLayout writes the index as an OCI layout in dir/oci, tagged with the version, and
// returns the index digest.
func writeLayout(opts *options, dir string, index v1.ImageIndex) (string, error) {
	digest, err := index.Digest()
	if err != nil {
		return "", err
	}
	path, err := layout.Write(filepath.Join(dir, "oci"), empty.Index)
	if err != nil {
		return "", err
	}
	if err := path.AppendIndex(index, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": opts.version,
	})); err != nil {
		return "", err
	}
	return digest.String(), nil
}

// push writes the index and its images to a registry as the tagged reference repoTag, with
// the credentials docker and crane would use (~/.docker/config.json), and returns the pushed
// reference by digest.
func push(ctx context.Context, repoTag string, index v1.ImageIndex) (string, error) {
	ref, err := name.ParseReference(repoTag)
	if err != nil {
		return "", err
	}
	if err := remote.WriteIndex(ref, index, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return "", fmt.Errorf("pushing %s: %w", ref, err)
	}
	digest, err := index.Digest()
	if err != nil {
		return "", err
	}
	return ref.Context().Digest(digest.String()).String(), nil
}
