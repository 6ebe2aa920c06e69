// Package examples checks deploy/examples/ against the projects they configure: each manifest
// is applied with a server-side dry run to a local control plane that has those projects' CRDs
// (the Gateway API, Envoy Gateway, Traefik, Istio; fetched by hack/tools.sh crds), and the
// route each one gives the gate is read by the gate's own parser and handler.
package examples

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zerowake/zerowake/hack/localcluster"
)

var (
	cluster *localcluster.Cluster
	// root is the repository; crds the directory hack/tools.sh keeps the CRDs in.
	root, crds string
)

func TestMain(m *testing.M) {
	localcluster.Main(m, localcluster.Options{}, setup)
}

// The namespaces the examples name: the application's, the gate's and Istio's.
var namespaces = []string{"shop", "zerowake-system", "istio-system"}

func setup(c *localcluster.Cluster) error {
	cluster = c
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var err error
	if root, err = localcluster.RepoRoot(); err != nil {
		return err
	}
	tools := filepath.Join(root, "hack", "tools.sh")
	if out, err := exec.CommandContext(ctx, "bash", tools, "crds").CombinedOutput(); err != nil {
		return fmt.Errorf("hack/tools.sh crds: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, "bash", tools, "path", "crds").Output()
	if err != nil {
		return fmt.Errorf("hack/tools.sh path crds: %w", err)
	}
	crds = strings.TrimSpace(string(out))
	// The Gateway API's standard channel first: what most clusters have.
	if err := installCRDs(ctx, "gateway-api-standard", "envoy-gateway", "traefik", "istio"); err != nil {
		return err
	}
	for _, ns := range namespaces {
		if _, err := c.Client().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// installCRDs applies the CRDs of the named sets (directories under crds) and waits until
// the API server serves them.
func installCRDs(ctx context.Context, sets ...string) error {
	for _, set := range sets {
		if _, err := cluster.Kubectl(ctx, "apply", "--server-side", "--force-conflicts", "-f", filepath.Join(crds, set)); err != nil {
			return err
		}
	}
	_, err := cluster.Kubectl(ctx, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
	return err
}
