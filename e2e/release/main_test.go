// Package release tests what a release ships, the way a user would meet it: TestMain builds a
// release bundle with hack/release.sh (the controller and gate images, rendered manifests,
// plugin archives, krew manifest, checksums) and installs its manifests on a local control
// plane; the tests check the images from the outside and run their entrypoints against the
// control plane as the release's ServiceAccounts, install the Helm chart with and without the
// gate, and check the monitoring queries against the running controller's /metrics.
package release

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/zerowake/zerowake/generated/clientset/versioned"
	"github.com/zerowake/zerowake/hack/localcluster"
)

// releasedImage is one image of the bundle.
type releasedImage struct {
	// command is the image's only binary, /command, and the name of its directory in the bundle.
	command string
	// repository is the name the manifests give the image.
	repository string
	// digest is the image index digest the bundle has for it.
	digest string
}

// ref is the image by digest, as the bundle's manifests name it.
func (i *releasedImage) ref() string { return i.repository + "@" + i.digest }

// dir holds the image's OCI layout (oci/), its digest and its SBOMs.
func (i *releasedImage) dir() string { return filepath.Join(bundle, "image", i.command) }

var (
	controllerImage = &releasedImage{command: "zerowake-controller", repository: "ghcr.io/zerowake/zerowake-controller"}
	gateImage       = &releasedImage{command: "zerowake-gate", repository: "ghcr.io/zerowake/zerowake-gate"}
	releasedImages  = []*releasedImage{controllerImage, gateImage}
)

// gateTokenSecret is the Secret the release's gate Deployment mounts (deploy/gate/deployment.yaml).
const gateTokenSecret = "zerowake-gate-token"

var (
	cluster *localcluster.Cluster
	kube    kubernetes.Interface
	client  versioned.Interface
	root    string
	// version is the release the tree names (deploy/ and the chart); the bundle is cut at it.
	version string
	// epoch is the SOURCE_DATE_EPOCH of every build in this package.
	epoch string
	// bundle is the release directory hack/release.sh wrote.
	bundle string
	helm   string
)

func TestMain(m *testing.M) {
	localcluster.Main(m, localcluster.Options{}, setup)
}

func setup(c *localcluster.Cluster) error {
	cluster = c
	kube = c.Client()
	var err error
	if client, err = versioned.NewForConfig(c.RESTConfig()); err != nil {
		return err
	}
	if root, err = localcluster.RepoRoot(); err != nil {
		return err
	}
	// Cold, the bundle cross-compiles six binaries; the Go build cache makes later runs quick.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	out, err := run(ctx, root, nil, "bash", "-c", `awk '$1 == "newTag:" {print $2}' deploy/base/kustomization.yaml`)
	if err != nil {
		return err
	}
	version = strings.TrimSpace(out)
	if out, err = run(ctx, root, nil, "git", "log", "-1", "--format=%ct"); err != nil {
		return err
	}
	epoch = strings.TrimSpace(out)

	bundle = filepath.Join(c.Dir(), "release")
	start := time.Now()
	if _, err := run(ctx, root, []string{"VERSION=" + version, "RELEASE_DIR=" + bundle, "SOURCE_DATE_EPOCH=" + epoch},
		"hack/release.sh", "bundle"); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "release: bundle %s built in %s\n", version, time.Since(start).Round(time.Second))
	for _, img := range releasedImages {
		data, err := os.ReadFile(filepath.Join(img.dir(), "digest"))
		if err != nil {
			return err
		}
		img.digest = strings.TrimSpace(string(data))
		fmt.Fprintf(os.Stderr, "release: %s %s\n", img.command, img.digest)
	}

	if _, err := run(ctx, root, nil, "hack/tools.sh", "helm"); err != nil {
		return err
	}
	if out, err = run(ctx, root, nil, "hack/tools.sh", "path", "helm"); err != nil {
		return err
	}
	helm = strings.TrimSpace(out)

	// The release's own install, as docs/install.md tells a user: the CRDs, the controller,
	// then the gate's token Secret and the gate (serving the namespace "default").
	for _, file := range []string{"zerowake-crds.yaml", "zerowake.yaml"} {
		if _, err := c.Kubectl(ctx, "apply", "--server-side", "-f", filepath.Join(bundle, file)); err != nil {
			return err
		}
	}
	if _, err := c.Kubectl(ctx, "-n", "zerowake-system", "create", "secret", "generic", gateTokenSecret,
		"--from-literal=token="+gateToken); err != nil {
		return err
	}
	if _, err := c.Kubectl(ctx, "apply", "--server-side", "-f", filepath.Join(bundle, "zerowake-gate.yaml")); err != nil {
		return err
	}
	_, err = c.Kubectl(ctx, "wait", "--for=condition=Established", "crd/scalerequests.zerowake.dev", "--timeout=60s")
	return err
}

// gateToken is the token in the gate's Secret, which calls to the gate must carry.
const gateToken = "release-test-token"

// run runs a command in dir with extra environment and returns its standard output; on
// failure the error carries both outputs.
func run(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
