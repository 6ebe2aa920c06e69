// Package gate tests the wake gate end to end: a real proxy (Caddy, built by hack/tools.sh)
// whose route asks the gate binary through forward_auth, the controller binary, and a backend
// HTTP server on loopback standing in for the workload's pods (kwok pods serve nothing). The
// gate runs with the identity deploy/gate-all-namespaces binds (the gate role, every namespace,
// since each test has its own) and the proxy's token; the controller with deploy/'s.
package gate

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
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

// gateToken is the token Caddy sends the gate (header_up), from the file at tokenFile.
const gateToken = "e2e-proxy-token"

var tokenFile string

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
	if _, err := c.Kubectl(ctx, "apply", "--server-side", "-k", filepath.Join(root, "deploy", "gate-all-namespaces")); err != nil {
		return err
	}
	tokenFile = filepath.Join(c.Dir(), "gate-token")
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

// startGate runs a gate replica with the identity deploy/gate-all-namespaces binds and returns it and its
// forward-auth address.
func startGate(ctx context.Context, name string) (*framework.Controller, string, error) {
	port, err := framework.FreePort()
	if err != nil {
		return nil, "", err
	}
	address := "127.0.0.1:" + strconv.Itoa(port)
	p, err := framework.StartController(ctx, framework.ControllerOptions{
		Name: name, Binary: gateBinary, Config: gateConfig, Dir: cluster.Dir(),
		Args: []string{"--address=" + address, "--window=" + window.String(), "--retry-after=3s",
			"--all-namespaces", "--auth-token-file=" + tokenFile, "--expose-details"},
	})
	return p, address, err
}
