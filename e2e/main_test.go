// Package e2e tests the controller binary, the CRD and the install manifests against a real
// control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok) that
// TestMain starts on loopback. The controller runs as a process with the token of the
// ServiceAccount that deploy/ binds, so every test also exercises the shipped RBAC.
package e2e

import (
	"context"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/zerowake/zerowake/e2e/framework"
	"github.com/zerowake/zerowake/generated/clientset/versioned"
	"github.com/zerowake/zerowake/hack/localcluster"
)

var (
	cluster *localcluster.Cluster
	kube    kubernetes.Interface
	client  versioned.Interface
	// controllerConfig authenticates as the controller's ServiceAccount from deploy/.
	controllerConfig *rest.Config
	// shared is the controller most tests use.
	shared *framework.Controller
	// controllerBinary is the built controller, for tests that run one of their own.
	controllerBinary string
)

// Flags of the shared controller: short windows so tests are quick, and kinds chosen so each
// failure reason is reachable (ConfigMap has no /scale, Widget.example.com is not served).
var sharedControllerArgs = []string{
	"--rescale-duration=2s",
	"--ready-timeout=15s",
	"--allowed-kinds=Deployment.apps,StatefulSet.apps,ConfigMap,Widget.example.com",
	"--leader-elect=true",
	"--leader-election-namespace=zerowake-system",
}

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
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	if err := framework.Install(ctx, c); err != nil {
		return err
	}
	binary, err := framework.BuildController(ctx, c.Dir())
	if err != nil {
		return err
	}
	controllerBinary = binary
	if controllerConfig, err = c.ServiceAccountConfig(ctx, "zerowake-system", "zerowake-controller"); err != nil {
		return err
	}
	shared, err = framework.StartController(ctx, framework.ControllerOptions{
		Name: "shared", Binary: binary, Config: controllerConfig, Dir: c.Dir(), Args: sharedControllerArgs,
	})
	return err
}
