// Package gate tests the wake gate end to end: a real proxy (Caddy, built by hack/tools.sh)
// whose route asks the gate binary through forward_auth, the controller binary, and a backend
// HTTP server on loopback standing in for the workload's pods (kwok pods serve nothing). The
// gate runs with the identity deploy/gate binds (the resolver role only) and the controller
// with deploy/'s.
package gate

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	// gateProc is the gate binary; gateAddress its forward-auth address.
	gateProc    *framework.Controller
	gateAddress string
	// gateBinary and gateConfig start more gate replicas.
	gateBinary string
	gateConfig *rest.Config
	// caddy is the path of the Caddy binary hack/tools.sh built.
	caddy string
	// backend stands in for the pods of every target; backendHits counts what reached it.
	backend     *httptest.Server
	backendHits atomic.Int64
)

// window is the controller's --rescale-duration and the gate's --window.
const window = 30 * time.Second

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
	if err := ensureResolverRole(ctx); err != nil {
		return err
	}
	if _, err := c.Kubectl(ctx, "apply", "--server-side", "-k", filepath.Join(root, "deploy", "gate")); err != nil {
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
		Name: "gate-e2e", Binary: ctrlBinary, Config: ctrlConfig, Dir: c.Dir(),
		Args: []string{"--rescale-duration=" + window.String(), "--ready-timeout=2m", "--leader-elect=false"},
	})
	if err != nil {
		return err
	}
	if gateConfig, err = c.ServiceAccountConfig(ctx, "zerowake-system", "zerowake-gate"); err != nil {
		return err
	}
	if gateProc, gateAddress, err = startGate(ctx, "gate"); err != nil {
		return err
	}
	backend = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		backendHits.Add(1)
		fmt.Fprintf(w, "backend: %s %s\n", r.Method, r.URL.Path)
	}))
	return nil
}

// startGate runs a gate replica with the identity deploy/gate binds and returns it and its
// forward-auth address.
func startGate(ctx context.Context, name string) (*framework.Controller, string, error) {
	port, err := framework.FreePort()
	if err != nil {
		return nil, "", err
	}
	address := "127.0.0.1:" + strconv.Itoa(port)
	p, err := framework.StartController(ctx, framework.ControllerOptions{
		Name: name, Binary: gateBinary, Config: gateConfig, Dir: cluster.Dir(),
		Args: []string{"--address=" + address, "--window=" + window.String(), "--retry-after=3s"},
	})
	return p, address, err
}

// ensureResolverRole makes sure the ClusterRole deploy/gate binds exists. deploy/ ships it; an
// install without it gets one with exactly the rules it is specified to hold, so that the gate
// is still tested with the resolver's rights and no more.
func ensureResolverRole(ctx context.Context) error {
	_, err := kube.RbacV1().ClusterRoles().Get(ctx, "zerowake-resolver", metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		return err
	}
	_, err = kube.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "zerowake-resolver"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{"zerowake.dev"}, Resources: []string{"scalerequests"},
			Verbs: []string{"create", "patch", "get", "list", "watch"},
		}},
	}, metav1.CreateOptions{})
	return err
}
