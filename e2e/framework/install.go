package framework

import (
	"context"
	"path/filepath"

	"github.com/zerowake/zerowake/hack/localcluster"
)

// Install applies crds/ and deploy/ with kubectl, exactly as the README tells a user to, and
// waits until the CRD is served.
func Install(ctx context.Context, c *localcluster.Cluster) error {
	root, err := localcluster.RepoRoot()
	if err != nil {
		return err
	}
	for _, dir := range []string{"crds", "deploy"} {
		if _, err := c.Kubectl(ctx, "apply", "--server-side", "-k", filepath.Join(root, dir)); err != nil {
			return err
		}
	}
	_, err = c.Kubectl(ctx, "wait", "--for=condition=Established", "crd/scalerequests.zerowake.dev", "--timeout=60s")
	return err
}
