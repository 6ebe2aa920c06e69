// Package node tests zerowake as users first meet it, on the local cluster's real node:
// the controller and the gate installed by the Helm chart from the images `make image` builds,
// running as pods under their ServiceAccounts, probes and leader election; a real container at
// zero replicas with a readiness probe; and a client's request through an ingress proxy (Caddy,
// forward_auth to the gate, upstreams from the Services' ready endpoints) waking it.
//
// One cluster, one install and one proxy serve every test (TestMain). On a host that cannot
// run the node the package fails and says why; ZEROWAKE_SKIP_NODE=1 skips it.
package node

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	corev1 "k8s.io/api/core/v1"

	"github.com/zerowake/zerowake/e2e/framework"
	"github.com/zerowake/zerowake/hack/localcluster"
)

// The apps the tests wake, each its own target so that every test starts from zero, in the
// one namespace the gate serves.
const appNamespace = "apps"

var (
	coldApp     = framework.AppOptions{Namespace: appNamespace, Name: "cold"}
	herdApp     = framework.AppOptions{Namespace: appNamespace, Name: "herd"}
	gateFailApp = framework.AppOptions{Namespace: appNamespace, Name: "gatefail"}
	// The controller is deleted while this one starts: its start delay keeps the wake under
	// way for seconds after the Deployment was scaled.
	failoverApp = framework.AppOptions{Namespace: appNamespace, Name: "failover", StartDelay: 4 * time.Second}
	// This one asks to sleep when idle, after longer than the controller's minimum here.
	sleepyApp = framework.AppOptions{Namespace: appNamespace, Name: "sleepy", IdleAfter: sleepIdleAfter}
	apps      = []framework.AppOptions{coldApp, herdApp, gateFailApp, failoverApp, sleepyApp}
)

// sleepIdleAfter is the sleepy app's idle-after. The controller is installed accepting it (its
// default minimum, 30s, would make each sleep and wake cycle last half a minute), with its
// rescale window no longer, as by default: a wake right after a sleep waits for the window
// since the previous wake's scale-up (docs/sleep.md).
const (
	sleepIdleAfter = 5 * time.Second
	rescaleWindow  = sleepIdleAfter
)

// routeTimeout is how long the gate holds a request: far above a cold start here (~2 s), and
// above a controller failover (the lease is released on SIGTERM, else it expires after 15 s).
const routeTimeout = 60 * time.Second

const gateToken = "node-test-token"

// auditPolicy records every request on ScaleRequests, to count the writes a wake makes.
var auditPolicy = []byte(`apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  resources:
  - group: zerowake.dev
    resources: [scalerequests, scalerequests/status]
- level: None
`)

var (
	cluster  *localcluster.Cluster
	node     *localcluster.Node
	resolver *framework.EndpointResolver
	proxy    *framework.IngressProxy
)

func TestMain(m *testing.M) {
	flag.Parse()
	if !testing.Short() {
		if os.Getenv("ZEROWAKE_SKIP_NODE") == "1" {
			fmt.Fprintln(os.Stderr, "e2e/node: ZEROWAKE_SKIP_NODE=1: skipping the real node's tests")
			os.Exit(0)
		}
		if err := localcluster.NodeRequirements(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e/node: %v\n(ZEROWAKE_SKIP_NODE=1 skips these tests)\n", err)
			os.Exit(1)
		}
	}
	localcluster.Main(m, localcluster.Options{RealNode: true, AuditPolicy: auditPolicy, Timeout: 3 * time.Minute}, setup)
}

func setup(c *localcluster.Cluster) error {
	cluster, node = c, c.Node()
	// Cold, the images' three binaries compile from scratch; the Go build cache makes later
	// runs quick.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	begin := time.Now()
	images := filepath.Join(c.Dir(), "images")
	if err := framework.BuildNodeImages(ctx, images); err != nil {
		return err
	}
	if err := framework.ImportNodeImages(ctx, node, images); err != nil {
		return err
	}
	logf("images built and imported in %s", time.Since(begin).Round(time.Millisecond))

	t := time.Now()
	if _, err := c.Client().CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: appNamespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := framework.InstallChart(ctx, c, framework.ChartInstall{AppNamespaces: []string{appNamespace}, GateToken: gateToken,
		Set: []string{"extraArgs={--min-idle-after=" + sleepIdleAfter.String() + "}", "rescaleDuration=" + rescaleWindow.String()}}); err != nil {
		return err
	}
	logf("chart installed, controller and gate available in %s", time.Since(t).Round(time.Millisecond))

	routes := make([]framework.IngressRoute, 0, len(apps))
	for _, app := range apps {
		if err := framework.CreateApp(ctx, c, app); err != nil {
			return err
		}
		routes = append(routes, framework.AppRoute(app, routeTimeout))
	}
	// Kept until the process exits, as the cluster is.
	var err error
	if proxy, resolver, _, err = framework.StartNodeIngress(ctx, c, gateToken, routes); err != nil {
		return err
	}
	out, _ := c.Kubectl(ctx, "get", "nodes", "-o", "wide")
	pods, _ := c.Kubectl(ctx, "get", "pods", "-n", framework.ReleaseNamespace, "-o", "wide")
	logf("setup done in %s\n%s\n%s", time.Since(begin).Round(time.Millisecond), out, pods)
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "e2e/node: "+format+"\n", args...)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
