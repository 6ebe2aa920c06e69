// Package release tests what a release ships, the way a user would meet it: TestMain builds a
// release bundle with hack/release.sh (the image, rendered manifests, plugin archives, krew
// manifest, checksums) and installs its manifests on a local control plane; the tests check the
// image from the outside and run its entrypoint against the control plane, install the Helm
// chart, and check the monitoring queries against the running controller's /metrics.
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

const imageName = "ghcr.io/zerowake/zerowake-controller"

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
	// digest is the image index digest in the bundle.
	digest string
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
	data, err := os.ReadFile(filepath.Join(bundle, "image", "digest"))
	if err != nil {
		return err
	}
	digest = strings.TrimSpace(string(data))

	if _, err := run(ctx, root, nil, "hack/tools.sh", "helm"); err != nil {
		return err
	}
	if out, err = run(ctx, root, nil, "hack/tools.sh", "path", "helm"); err != nil {
		return err
	}
	helm = strings.TrimSpace(out)

	// The release's own install, as its notes tell a user: the CRDs, then the controller.
	for _, file := range []string{"zerowake-crds.yaml", "zerowake.yaml"} {
		if _, err := c.Kubectl(ctx, "apply", "--server-side", "-f", filepath.Join(bundle, file)); err != nil {
			return err
		}
	}
	_, err = c.Kubectl(ctx, "wait", "--for=condition=Established", "crd/scalerequests.zerowake.dev", "--timeout=60s")
	return err
}

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
