// Package wakeclient tests the resolver's side on a real control plane: the wake client under a
// thundering herd and the kubectl-zerowake CLI, against a controller that serves only this
// package, so that its request metrics count exactly the writes a wake caused.
package wakeclient

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/zerowake/zerowake/e2e/framework"
	"github.com/zerowake/zerowake/hack/localcluster"
)

var (
	cluster    *localcluster.Cluster
	kube       kubernetes.Interface
	controller *framework.Controller
	// cli is the kubectl-zerowake binary built for this run.
	cli string
	// rescaleDuration is the controller's window, and so the wake client's.
	rescaleDuration = 30 * time.Second
)

func TestMain(m *testing.M) {
	localcluster.Main(m, localcluster.Options{}, setup)
}

func setup(c *localcluster.Cluster) error {
	cluster = c
	kube = c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := framework.Install(ctx, c); err != nil {
		return err
	}
	binary, err := framework.BuildController(ctx, c.Dir())
	if err != nil {
		return err
	}
	root, err := localcluster.RepoRoot()
	if err != nil {
		return err
	}
	cli = filepath.Join(c.Dir(), "kubectl-zerowake")
	build := exec.CommandContext(ctx, "go", "build", "-o", cli, "./cmd/kubectl-zerowake")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building kubectl-zerowake: %v\n%s", err, out)
	}
	config, err := c.ServiceAccountConfig(ctx, "zerowake-system", "zerowake-controller")
	if err != nil {
		return err
	}
	controller, err = framework.StartController(ctx, framework.ControllerOptions{
		Name: "wakeclient", Binary: binary, Config: config, Dir: c.Dir(),
		Args: []string{"--rescale-duration=" + rescaleDuration.String(), "--ready-timeout=10s", "--leader-elect=false"},
	})
	return err
}
