package node

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zerowake/zerowake/e2e/framework"
)

// reply is what a client got through the proxy.
type reply struct {
	status int
	body   string
	header http.Header
	took   time.Duration
	err    error
}

func (r reply) String() string {
	if r.err != nil {
		return fmt.Sprintf("error after %s: %v", r.took.Round(time.Millisecond), r.err)
	}
	return fmt.Sprintf("%d %q after %s (X-Zerowake-Outcome %q)", r.status, r.body, r.took.Round(time.Millisecond), r.header.Get("X-Zerowake-Outcome"))
}

// get sends GET / for app through the ingress proxy.
func get(ctx context.Context, client *http.Client, app framework.AppOptions) reply {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+framework.AppRoute(app, 0).Host+"/", nil)
	if err != nil {
		return reply{err: err}
	}
	resp, err := client.Do(req)
	if err != nil {
		return reply{err: err, took: time.Since(start)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, body: string(body), header: resp.Header, took: time.Since(start), err: err}
}

// answeredByApp reports whether r is the app's own 200: hack/testapp names its pod, which is
// named after the Deployment.
func answeredByApp(r reply, app framework.AppOptions) bool {
	return r.err == nil && r.status == http.StatusOK && strings.HasPrefix(r.body, "testapp "+app.Name+"-")
}

// requireIdle fails unless app is at zero replicas with no ready endpoint: the request that
// follows is a cold one.
func requireIdle(t *testing.T, ctx context.Context, app framework.AppOptions) {
	t.Helper()
	d, err := cluster.Client().AppsV1().Deployments(app.Namespace).Get(ctx, app.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 0 || d.Status.ReadyReplicas != 0 {
		t.Fatalf("%s is at %d replicas, %d ready; the test needs it idle", app.Name, *d.Spec.Replicas, d.Status.ReadyReplicas)
	}
	if ready := resolver.Ready(app.Namespace, app.Name); len(ready) > 0 {
		t.Fatalf("%s has ready endpoints %v; the test needs none", app.Name, ready)
	}
}

// TestColdRequest: one request for an app at zero returns the app's own 200, never a proxy's
// or the gate's answer.
func TestColdRequest(t *testing.T) {
	ctx := testContext(t)
	requireIdle(t, ctx, coldApp)
	r := get(ctx, proxy.Client(2*routeTimeout), coldApp)
	if !answeredByApp(r, coldApp) {
		t.Fatalf("cold request: %s, want the app's 200\ncaddy log:\n%s", r, tail(proxy.Log(), 20))
	}
	t.Logf("cold request: %s", r)
}

// TestConcurrentColdRequests: 50 requests at once for one app at zero all return the app's
// 200, after exactly one ScaleRequest write between them (the gate replicas' wake clients
// share the ScaleRequest; a replica that loses the race to create it writes nothing).
func TestConcurrentColdRequests(t *testing.T) {
	ctx := testContext(t)
	requireIdle(t, ctx, herdApp)
	const n = 50
	client := proxy.Client(2 * routeTimeout)
	replies := make([]reply, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			replies[i] = get(ctx, client, herdApp)
		})
	}
	close(start)
	wg.Wait()
	var slowest time.Duration
	for i, r := range replies {
		if !answeredByApp(r, herdApp) {
			t.Errorf("request %d: %s, want the app's 200", i, r)
		}
		slowest = max(slowest, r.took)
	}
	writes, refused := scaleRequestWrites(t, herdApp)
	if len(writes) != 1 {
		t.Errorf("%d successful ScaleRequest writes for %d requests, want exactly 1:%s", len(writes), n, strings.Join(writes, ""))
	}
	t.Logf("%d requests: all answered within %s; ScaleRequest writes: %d (+%d refused)%s", n, slowest.Round(time.Millisecond),
		len(writes), refused, strings.Join(writes, ""))
}

// auditEvent is the part of an audit.k8s.io/v1 Event the tests read.
type auditEvent struct {
	Stage     string                    `json:"stage"`
	Verb      string                    `json:"verb"`
	User      struct{ Username string } `json:"user"`
	ObjectRef *struct {
		Resource, Namespace, Name, Subresource string
	} `json:"objectRef"`
	ResponseStatus *struct{ Code int } `json:"responseStatus"`
}

// scaleRequestWrites returns the completed, successful writes of app's ScaleRequest itself
// (not its status, which the controller writes), one line each, and how many writes the
// apiserver refused (e.g. a second create).
func scaleRequestWrites(t *testing.T, app framework.AppOptions) (writes []string, refused int) {
	t.Helper()
	file, err := os.Open(cluster.AuditLog())
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	scanner := bufio.NewScanner(file)
	scanner.Buffer(make([]byte, 1<<20), 16<<20)
	for scanner.Scan() {
		var e auditEvent
		if err := json.Unmarshal(scanner.Bytes(), &e); err != nil {
			t.Fatalf("audit log: %v", err)
		}
		ref := e.ObjectRef
		if e.Stage != "ResponseComplete" || ref == nil || ref.Resource != "scalerequests" || ref.Subresource != "" ||
			ref.Namespace != app.Namespace || ref.Name != app.Name {
			continue
		}
		switch e.Verb {
		case "create", "update", "patch":
		default:
			continue
		}
		if e.ResponseStatus == nil || e.ResponseStatus.Code >= 300 {
			refused++
			continue
		}
		writes = append(writes, fmt.Sprintf("\n  %s %s -> %d", e.User.Username, e.Verb, e.ResponseStatus.Code))
	}
	if err := scanner.Err(); err != nil {
		t.Fatal(err)
	}
	return writes, refused
}

// TestControllerDeletedDuringWake: the leading controller pod is deleted after it scaled the
// app and before the app is ready; the request still gets the app's 200 (the standby takes the
// lease, which the leader releases on SIGTERM, and finishes the wake).
func TestControllerDeletedDuringWake(t *testing.T) {
	ctx := testContext(t)
	requireIdle(t, ctx, failoverApp)
	answered := make(chan reply, 1)
	go func() { answered <- get(ctx, proxy.Client(2*routeTimeout), failoverApp) }()

	// The wake is under way once the controller has scaled the Deployment.
	deployments := cluster.Client().AppsV1().Deployments(failoverApp.Namespace)
	for {
		d, err := deployments.Get(ctx, failoverApp.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if *d.Spec.Replicas > 0 {
			break
		}
		select {
		case r := <-answered:
			t.Fatalf("answered before the Deployment was scaled: %s", r)
		case <-ctx.Done():
			t.Fatal("the controller never scaled the Deployment")
		case <-time.After(20 * time.Millisecond):
		}
	}
	leader := leaderPod(t, ctx)
	if err := cluster.Client().CoreV1().Pods(framework.ReleaseNamespace).Delete(ctx, leader, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Read after the deletion was accepted: not ready now means not ready when it happened.
	d, err := deployments.Get(ctx, failoverApp.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Status.ReadyReplicas > 0 {
		t.Fatalf("the app was ready before the controller was deleted (its %s start delay should have prevented it); the test proves nothing", failoverApp.StartDelay)
	}
	r := <-answered
	if !answeredByApp(r, failoverApp) {
		t.Fatalf("with the leader %s deleted mid-wake: %s, want the app's 200", leader, r)
	}
	t.Logf("leader %s deleted mid-wake; request: %s", leader, r)
}

// leaderPod returns the name of the controller pod holding the leader election Lease.
func leaderPod(t *testing.T, ctx context.Context) string {
	t.Helper()
	lease, err := cluster.Client().CoordinationV1().Leases(framework.ReleaseNamespace).Get(ctx, framework.ControllerName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
		t.Fatal("the controller's Lease has no holder")
	}
	// The identity is the pod's hostname (its name), "_", a UUID.
	name, _, _ := strings.Cut(*lease.Spec.HolderIdentity, "_")
	return name
}

// runningPods returns the Running pods of one of the chart's Deployments.
func runningPods(t *testing.T, ctx context.Context, name string) []corev1.Pod {
	t.Helper()
	list, err := cluster.Client().CoreV1().Pods(framework.ReleaseNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && p.Status.PodIP != "" {
			out = append(out, p)
		}
	}
	return out
}

// TestGatePodDeleted: one of the two gate pods is deleted; once its endpoint is no longer
// ready, a cold request is served by the other replica.
func TestGatePodDeleted(t *testing.T) {
	ctx := testContext(t)
	requireIdle(t, ctx, gateFailApp)
	pods := runningPods(t, ctx, framework.GateName)
	if len(pods) < 2 {
		t.Fatalf("%d gate pods running, want 2", len(pods))
	}
	victim, survivor := pods[0], pods[1]
	before := metricSum(t, ctx, survivor.Status.PodIP, "zerowake_gate_answers_total")
	if err := cluster.Client().CoreV1().Pods(framework.ReleaseNamespace).Delete(ctx, victim.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The gate fails /readyz as soon as it gets SIGTERM; the endpoint follows.
	gone := func(ready []string) bool { return !slices.Contains(ready, victim.Status.PodIP) }
	if err := resolver.WaitFor(ctx, framework.ReleaseNamespace, framework.GateName, gone); err != nil {
		t.Fatalf("the deleted gate pod %s stayed a ready endpoint: %v", victim.Name, err)
	}
	r := get(ctx, proxy.Client(2*routeTimeout), gateFailApp)
	if !answeredByApp(r, gateFailApp) {
		t.Fatalf("with gate pod %s deleted: %s, want the app's 200\ncaddy log:\n%s", victim.Name, r, tail(proxy.Log(), 20))
	}
	if after := metricSum(t, ctx, survivor.Status.PodIP, "zerowake_gate_answers_total"); after <= before {
		t.Errorf("the remaining gate pod %s answered nothing (answers %v before, %v after)", survivor.Name, before, after)
	}
	t.Logf("gate pod %s deleted, %s served: %s", victim.Name, survivor.Name, r)
}

// scrape returns a pod's /metrics, fetched from inside the node's network namespace.
func scrape(t *testing.T, ctx context.Context, podIP string) string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: node.DialContext}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s:%d/metrics", podIP, framework.OpsPort), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("scraping %s: %v", podIP, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scraping %s: %s %v", podIP, resp.Status, err)
	}
	return string(body)
}

// metricSum adds up every series of a metric in a pod's /metrics.
func metricSum(t *testing.T, ctx context.Context, podIP, metric string) float64 {
	t.Helper()
	var sum float64
	for _, line := range strings.Split(scrape(t, ctx, podIP), "\n") {
		if !strings.HasPrefix(line, metric+" ") && !strings.HasPrefix(line, metric+"{") {
			continue
		}
		fields := strings.Fields(line)
		var v float64
		if _, err := fmt.Sscan(fields[len(fields)-1], &v); err == nil {
			sum += v
		}
	}
	return sum
}

// TestLogsAndMetrics: the controller's and the gate's pods log JSON, as `kubectl logs` shows
// it, and serve their metrics on the ops port.
func TestLogsAndMetrics(t *testing.T) {
	ctx := testContext(t)
	for _, name := range []string{framework.ControllerName, framework.GateName} {
		pods := runningPods(t, ctx, name)
		if len(pods) == 0 {
			t.Errorf("no %s pod running", name)
			continue
		}
		for _, pod := range pods {
			metrics := scrape(t, ctx, pod.Status.PodIP)
			if !strings.Contains(metrics, "\nzerowake_") {
				t.Errorf("%s's /metrics has no zerowake_ series:\n%s", pod.Name, tail(metrics, 10))
			}
			// kubectl logs asks the apiserver, which asks the node's kubelet.
			out, err := cluster.Kubectl(ctx, "logs", "-n", framework.ReleaseNamespace, pod.Name)
			if err != nil {
				t.Errorf("%s: %v", pod.Name, err)
				continue
			}
			lines := 0
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				var entry map[string]any
				if err := json.Unmarshal([]byte(line), &entry); err != nil || entry["msg"] == nil || entry["level"] == nil {
					t.Errorf("%s: a log line that is not a JSON entry with level and msg: %q", pod.Name, line)
					continue
				}
				lines++
			}
			if lines == 0 {
				t.Errorf("%s logged nothing", pod.Name)
			}
			t.Logf("%s: %d JSON log lines, %d bytes of metrics", pod.Name, lines, len(metrics))
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
