// Command demonode is `make run NODE=1`: the demo on the local cluster's real node. It starts
// the cluster with its real node, builds the controller, gate and test app images, installs
// zerowake with its Helm chart, creates a Deployment at zero replicas (a real container that
// takes a few seconds to become ready) and puts Caddy in front of it, with forward_auth to the
// gate. It prints a URL to open on this machine: the gate's "starting up" page while the app
// wakes, then the app's own answer. Ctrl-C stops everything.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zerowake/zerowake/e2e/framework"
	"github.com/zerowake/zerowake/hack/localcluster"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

const demoToken = "demo-token"

// The app takes this long to become ready after its container starts, long enough to see the
// gate's page.
var web = framework.AppOptions{Namespace: "demo", Name: "web", StartDelay: 5 * time.Second}

func say(format string, args ...any) {
	fmt.Printf("\n\033[1m==> "+format+"\033[0m\n", args...)
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:8090", "Where the URL to open listens (a forwarder to Caddy on the node).")
	flag.Parse()
	if err := localcluster.NodeRequirements(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	say("Starting the local cluster with a real node (containerd, runc, the kubelet)")
	cluster, err := localcluster.Start(ctx, localcluster.Options{RealNode: true, Timeout: 3 * time.Minute})
	if err != nil {
		return err
	}
	defer cluster.Stop()

	say("Building the controller, gate and test app images (linux only this machine's architecture) and importing them")
	images := filepath.Join(cluster.Dir(), "images")
	if err := framework.BuildNodeImages(ctx, images); err != nil {
		return err
	}
	if err := framework.ImportNodeImages(ctx, cluster.Node(), images); err != nil {
		return err
	}
	if _, err := cluster.Client().CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: web.Namespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}

	say("helm install zerowake deploy/chart/zerowake --set gate.enabled=true ... (controller and gate as pods)")
	if err := framework.InstallChart(ctx, cluster, framework.ChartInstall{AppNamespaces: []string{web.Namespace}, GateToken: demoToken}); err != nil {
		return err
	}
	show(ctx, cluster, "get", "nodes", "-o", "wide")
	show(ctx, cluster, "get", "pods", "-n", framework.ReleaseNamespace, "-o", "wide")

	say("Deployment demo/web at 0 replicas, labelled zerowake.dev/wake=true, readiness probe every 1s, %s to start", web.StartDelay)
	if err := framework.CreateApp(ctx, cluster, web); err != nil {
		return err
	}
	show(ctx, cluster, "get", "deployment,service", "-n", web.Namespace)

	route := framework.AppRoute(web, 60*time.Second)
	route.Host, route.Page = "", true // any host name: the URL is an address
	proxy, _, stopProxy, err := framework.StartNodeIngress(ctx, cluster, demoToken, []framework.IngressRoute{route})
	if err != nil {
		return err
	}
	defer stopProxy()
	address, stopForward, err := proxy.Forward(*listen)
	if err != nil {
		return err
	}
	defer stopForward()

	url := "http://" + address + "/"
	say("Caddy runs on the node with forward_auth to the gate; open %s", url)
	fmt.Println("A browser gets the gate's \"starting up\" page, which reloads itself until the app answers.")

	say("curl -H 'Accept: text/html' %s  (a browser's first visit)", url)
	fmt.Println(fetch(ctx, url, "text/html"))
	say("curl %s  (held by the gate until the app is ready)", url)
	fmt.Println(fetch(ctx, url, ""))
	show(ctx, cluster, "get", "scalerequests,deployments,pods", "-n", web.Namespace, "-o", "wide")

	fmt.Printf(`
The cluster keeps running. Open %s, or in another terminal:

  export KUBECONFIG=%s
  %s scale deployment web -n demo --replicas=0     # then reload the page: it wakes again
                                                    # (after the controller's 30s rescale window)
  %s logs -n zerowake-system deployment/zerowake-gate

Caddy's log: %s
Press Ctrl-C to stop everything (nothing is left running).
`, url, cluster.Kubeconfig(), cluster.KubectlPath(), cluster.KubectlPath(), proxy.LogPath())
	<-ctx.Done()
	fmt.Println("\nstopping")
	return nil
}

// fetch GETs url and describes the answer in a few lines.
func fetch(ctx context.Context, url, accept string) string {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err.Error()
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := (&http.Client{Timeout: 90 * time.Second}).Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	text := strings.TrimSpace(string(body))
	if len(text) > 300 {
		text = text[:300] + " ..."
	}
	return fmt.Sprintf("HTTP %d after %s (X-Zerowake-Outcome: %q)\n%s", resp.StatusCode, time.Since(start).Round(time.Millisecond),
		resp.Header.Get("X-Zerowake-Outcome"), text)
}

func show(ctx context.Context, cluster *localcluster.Cluster, args ...string) {
	fmt.Printf("$ kubectl %s\n", strings.Join(args, " "))
	out, err := cluster.Kubectl(ctx, args...)
	if err != nil {
		fmt.Println(err)
	}
	fmt.Print(out)
}
