// Package sleep tests sleeping end to end on the local control plane: the controller binary puts
// idle workloads (kwok pods) to sleep while two gate replicas behind Caddy answer forward-auth
// calls for them, and a backend on loopback stands in for the pods. The controller runs with
// deploy/'s identity and a lowered --min-idle-after, so that many sleep and wake cycles fit in a
// short test; the gates with deploy/gate-all-namespaces' identity and a membership Lease each.
package sleep

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
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
	ctrl    *framework.Controller
	gates   []*framework.Controller
	// gateAddresses are the gate replicas' forward-auth addresses.
	gateAddresses []string
	caddy         string
	gateConfig    *rest.Config
	gateBinary    string
)

const (
	gateToken = "e2e-sleep-token"
	// idleAfter is the targets' zerowake.dev/idle-after: the controller's --min-idle-after is
	// lowered to it so that a cycle takes seconds. The activity interval is then 1s (its floor),
	// and a target is idle 2.2s after the last renewal the controller saw (idle-after and the
	// renewal lag).
	idleAfter = time.Second
	// window is the controller's --rescale-duration and the gates' --window: short, so that a
	// wake right after a sleep is not deferred.
	window = time.Second
	// membershipNamespace holds the gates' membership Leases (the controller's default
	// --gate-namespace, its leader election namespace).
	membershipNamespace = "zerowake-system"
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	root, err := localcluster.RepoRoot()
	if err != nil {
		return err
	}
	if err := framework.Install(ctx, c); err != nil {
		return err
	}
	if _, err := c.Kubectl(ctx, "apply", "--server-side", "-k", filepath.Join(root, "deploy", "gate-all-namespaces")); err != nil {
		return err
	}
	tokenFile := filepath.Join(c.Dir(), "gate-token")
	if err := os.WriteFile(tokenFile, []byte(gateToken+"\n"), 0o600); err != nil {
		return err
	}
	if caddy, err = framework.CaddyPath(ctx); err != nil {
		return err
	}
	ctrlBinary, err := framework.BuildController(ctx, c.Dir())
	if err != nil {
		return err
	}
	if gateBinary, err = framework.BuildGate(ctx, c.Dir()); err != nil {
		return err
	}
	ctrlConfig, err := c.ServiceAccountConfig(ctx, "zerowake-system", "zerowake-controller")
	if err != nil {
		return err
	}
	ctrl, err = framework.StartController(ctx, framework.ControllerOptions{
		Name: "sleep-e2e", Binary: ctrlBinary, Config: ctrlConfig, Dir: c.Dir(),
		Args: []string{"--rescale-duration=" + window.String(), "--ready-timeout=2m", "--leader-elect=false",
			"--min-idle-after=" + idleAfter.String()},
	})
	if err != nil {
		return err
	}
	if gateConfig, err = c.ServiceAccountConfig(ctx, "zerowake-system", "zerowake-gate"); err != nil {
		return err
	}
	for i := range 2 {
		port, err := framework.FreePort()
		if err != nil {
			return err
		}
		address := "127.0.0.1:" + strconv.Itoa(port)
		g, err := framework.StartController(ctx, framework.ControllerOptions{
			Name: "gate-" + strconv.Itoa(i), Binary: gateBinary, Config: gateConfig, Dir: c.Dir(),
			Args: []string{"--address=" + address, "--window=" + window.String(), "--retry-after=1s",
				"--all-namespaces", "--auth-token-file=" + tokenFile, "--expose-details",
				"--membership-namespace=" + membershipNamespace},
		})
		if err != nil {
			return err
		}
		gates = append(gates, g)
		gateAddresses = append(gateAddresses, address)
	}
	return nil
}
