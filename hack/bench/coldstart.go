package main

import (
	"context"
	"fmt"
	"image/color"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/zerowake/zerowake/e2e/framework"
	"github.com/zerowake/zerowake/generated/clientset/versioned"
	"github.com/zerowake/zerowake/hack/localcluster"
)

// ColdStart: real cold starts on the local cluster's real node, in a cluster of their own
// (etcd, the control plane, containerd, the kubelet), with zerowake installed by its chart
// from the images the run builds. A client's GET goes through Caddy, which sends it to the
// Service's ready endpoints as ingress controllers do.
type ColdStart struct {
	N int `json:"n"`
	// ZerowakeMs: GET sent through Caddy with forward_auth to the gate, for hack/testapp at
	// zero replicas (readiness probe every 1s) → the app's own 200 received.
	ZerowakeMs Percentiles `json:"zerowake_ms"`
	// FloorMs: no zerowake: the /scale PATCH to 1 sent → the Service's ready endpoint seen by
	// the watch → the same GET through Caddy without forward_auth → the app's 200 received.
	// FloorEndpointMs is its first part.
	FloorMs         Percentiles `json:"floor_ms"`
	FloorEndpointMs Percentiles `json:"floor_endpoint_ms"`
	// OverheadP50Ms = zerowake_ms.p50 - floor_ms.p50; the goal is ≤ 100.
	OverheadP50Ms float64 `json:"overhead_p50_ms"`
	Node          string  `json:"node"`
	// ChartValues are the chart values set besides the images, the gate and the node.
	ChartValues []string `json:"chart_values"`
	// Skipped says why the scenario did not run (a host that cannot run the real node).
	Skipped string `json:"skipped,omitempty"`
}

type coldStartSamples struct {
	zerowake, floor, floorEndpoint samples
}

// The cold-start scenario's namespace, targets and gate token.
const (
	coldNamespace = "coldstart"
	coldToken     = "bench-token"
	coldRescale   = "1s"
)

var (
	coldWoken = framework.AppOptions{Namespace: coldNamespace, Name: "woken"}
	// The floor's app is the same Deployment under another name; nothing creates a
	// ScaleRequest for it.
	coldFloor = framework.AppOptions{Namespace: coldNamespace, Name: "floor"}
)

func (b *bench) coldStart(ctx context.Context) error {
	if err := localcluster.NodeRequirements(); err != nil {
		if b.cfg.only["coldstart"] {
			return err
		}
		// A full run on such a host keeps the other scenarios' results and says why.
		logf("coldstart: skipped: %v", err)
		b.results.ColdStart = &ColdStart{Skipped: err.Error()}
		return nil
	}
	t := time.Now()
	cluster, err := localcluster.Start(ctx, localcluster.Options{RealNode: true, Log: os.Stderr, Timeout: 3 * time.Minute})
	if err != nil {
		return err
	}
	defer func() {
		if err := cluster.Stop(); err != nil {
			logf("stopping the real-node cluster: %v", err)
		}
	}()
	images := filepath.Join(cluster.Dir(), "images")
	if err := framework.BuildNodeImages(ctx, images); err != nil {
		return err
	}
	if err := framework.ImportNodeImages(ctx, cluster.Node(), images); err != nil {
		return err
	}
	if _, err := cluster.Client().CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: coldNamespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	// Each round scales the app down by hand seconds after its wake. The controller's
	// default 30s cool-down between scale writes to one target (rescaleDuration) would
	// defer the next round's wake to the window's end and time the window, not the wake.
	install := framework.ChartInstall{AppNamespaces: []string{coldNamespace}, GateToken: coldToken, Set: []string{"rescaleDuration=" + coldRescale}}
	if err := framework.InstallChart(ctx, cluster, install); err != nil {
		return err
	}
	for _, app := range []framework.AppOptions{coldWoken, coldFloor} {
		if err := framework.CreateApp(ctx, cluster, app); err != nil {
			return err
		}
	}
	floorRoute := framework.AppRoute(coldFloor, 0)
	floorRoute.Target = "" // no forward_auth
	proxy, resolver, stopProxy, err := framework.StartNodeIngress(ctx, cluster, coldToken,
		[]framework.IngressRoute{framework.AppRoute(coldWoken, time.Minute), floorRoute})
	if err != nil {
		return err
	}
	defer stopProxy()
	zw, err := versioned.NewForConfig(cluster.RESTConfig())
	if err != nil {
		return err
	}
	if v, err := cluster.Client().Discovery().ServerVersion(); err == nil && b.results.Env.Kubernetes == "" {
		b.results.Env.Kubernetes = v.GitVersion
	}
	nodes, _ := cluster.Kubectl(ctx, "get", "nodes", "-o", "wide")
	pods, _ := cluster.Kubectl(ctx, "get", "pods", "-A", "-o", "wide", "--field-selector", "spec.nodeName="+cluster.Node().Name())
	logf("coldstart: real-node cluster and install ready in %s\n%s\n%s", time.Since(t).Round(time.Millisecond), nodes, pods)

	n := 30
	if b.cfg.quick {
		n = 20
	}
	client := proxy.Client(2 * time.Minute)
	deployments := cluster.Client().AppsV1().Deployments(coldNamespace)
	var s coldStartSamples
	for i := range n {
		if err := coldReset(ctx, cluster, zw, resolver); err != nil {
			return err
		}
		start := time.Now()
		if err := appAnswers(ctx, client, coldWoken); err != nil {
			return fmt.Errorf("round %d, through the gate: %w\ncaddy log:\n%s", i, err, tailLines(proxy.Log(), 20))
		}
		s.zerowake = append(s.zerowake, time.Since(start))

		start = time.Now()
		if _, err := deployments.Patch(ctx, coldFloor.Name, types.MergePatchType, []byte(`{"spec":{"replicas":1}}`), metav1.PatchOptions{}, "scale"); err != nil {
			return err
		}
		if err := resolver.WaitFor(ctx, coldNamespace, coldFloor.Name, func(ready []string) bool { return len(ready) > 0 }); err != nil {
			return err
		}
		s.floorEndpoint = append(s.floorEndpoint, time.Since(start))
		if err := appAnswers(ctx, client, coldFloor); err != nil {
			return fmt.Errorf("round %d, the floor: %w", i, err)
		}
		s.floor = append(s.floor, time.Since(start))
		logf("coldstart %d/%d: zerowake %s, floor %s", i+1, n, s.zerowake[i].Round(time.Millisecond), s.floor[i].Round(time.Millisecond))
	}
	r := &ColdStart{N: n, ZerowakeMs: s.zerowake.percentiles(), FloorMs: s.floor.percentiles(),
		FloorEndpointMs: s.floorEndpoint.percentiles(), Node: cluster.Node().Name(), ChartValues: install.Set}
	r.OverheadP50Ms = round2(r.ZerowakeMs.P50 - r.FloorMs.P50)
	b.results.ColdStart = r
	b.coldSamples = &s
	return nil
}

// coldReset brings both apps back to zero replicas with no pod left and no ready endpoint,
// and deletes the woken app's ScaleRequest, so the next round starts cold.
func coldReset(ctx context.Context, cluster *localcluster.Cluster, zw versioned.Interface, resolver *framework.EndpointResolver) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	kube := cluster.Client()
	for _, app := range []framework.AppOptions{coldWoken, coldFloor} {
		if _, err := kube.AppsV1().Deployments(coldNamespace).Patch(ctx, app.Name, types.MergePatchType,
			[]byte(`{"spec":{"replicas":0}}`), metav1.PatchOptions{}, "scale"); err != nil {
			return err
		}
	}
	err := zw.ZerowakeV1alpha1().ScaleRequests(coldNamespace).Delete(ctx, coldWoken.Name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	for _, app := range []framework.AppOptions{coldWoken, coldFloor} {
		if err := resolver.WaitFor(ctx, coldNamespace, app.Name, func(ready []string) bool { return len(ready) == 0 }); err != nil {
			return err
		}
		// Not timed: the pods' going is waited for by polling.
		for {
			pods, err := kube.CoreV1().Pods(coldNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app.Name})
			if err != nil {
				return err
			}
			if len(pods.Items) == 0 {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s's pods still there: %w", app.Name, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// appAnswers sends GET / for app through the proxy and returns nil if the app itself answered
// 200 (hack/testapp names its pod, which is named after the Deployment).
func appAnswers(ctx context.Context, client *http.Client, app framework.AppOptions) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+framework.AppRoute(app, 0).Host+"/", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "testapp "+app.Name+"-") {
		return fmt.Errorf("%s: %q, want the app's 200", resp.Status, body)
	}
	return nil
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// coldStartRows adds the scenario's rows to the table.
func coldStartRows(r *Results, add func(metric, value, target string, met *bool)) {
	c := r.ColdStart
	if c == nil {
		add("coldstart", "not run", "", nil)
		return
	}
	if c.Skipped != "" {
		add("coldstart", "not run: "+c.Skipped, "", nil)
		return
	}
	add(fmt.Sprintf("coldstart: GET → app's 200 through Caddy + gate, ms p50/p90/p99 (real node, n=%d)", c.N), ms(c.ZerowakeMs), "", nil)
	add("coldstart floor: PATCH /scale → ready endpoint → GET through Caddy → 200", ms(c.FloorMs), "", nil)
	add("coldstart floor: PATCH /scale → ready endpoint seen", ms(c.FloorEndpointMs), "", nil)
	add("coldstart: zerowake p50 - floor p50, ms", fmt.Sprintf("%.1f", c.OverheadP50Ms), "≤ 100", check(c.OverheadP50Ms <= 100))
}

// writeColdStartPlot draws the cold starts against their floor.
func writeColdStartPlot(path string, s *coldStartSamples, r *Results) error {
	all := []series{
		{label: "floor: PATCH /scale -> ready endpoint seen (no zerowake)", c: color.RGBA{150, 215, 150, 255}, ms: s.floorEndpoint.ms(), dash: true},
		{label: "floor: PATCH /scale -> endpoint -> GET through Caddy -> 200 from the app", c: color.RGBA{140, 190, 230, 255}, ms: s.floor.ms(), dash: true},
		{label: "zerowake: GET through Caddy + gate -> 200 from the app (app at zero)", c: color.RGBA{31, 119, 180, 255}, ms: s.zerowake.ms()},
	}
	title := fmt.Sprintf("real cold starts: %d requests to an app at zero vs the floor, CDF", r.ColdStart.N)
	return drawCDFs(path, title, "local control plane + a real node (containerd, kubelet)", all, r)
}
