package gate

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/zerowake/zerowake/e2e/framework"
	"github.com/zerowake/zerowake/gate"
	"github.com/zerowake/zerowake/hack/localcluster"
)

// createIdle creates Deployment name in ns at zero replicas. optedIn labels it as its owner
// allows waking (zerowake.dev/wake=true); neverReady gives it pods no node can take.
func createIdle(t *testing.T, ns, name string, optedIn, neverReady bool) {
	t.Helper()
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](0),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
			},
		},
	}
	if optedIn {
		d.Labels = map[string]string{"zerowake.dev/wake": "true"}
	}
	if neverReady {
		d.Spec.Template.Spec.NodeSelector = map[string]string{"zerowake.test/no-such-node": "true"}
	}
	if _, err := kube.AppsV1().Deployments(ns).Create(context.Background(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// startCaddy runs Caddy with one site whose every request first asks the gate, through
// forward_auth, about route (the gate's query string), and then goes to the backend. It returns
// the site's URL.
func startCaddy(t *testing.T, route string) string {
	return startCaddyWith(t, route, gateAddress)
}

// startCaddyWith is startCaddy with forward_auth spread over the gate replicas at gates.
func startCaddyWith(t *testing.T, route string, gates ...string) string {
	return startCaddyAuth(t, route, "header_up "+gate.HeaderToken+" "+gateToken, gates...)
}

// startCaddyAuth is startCaddyWith with extra forward_auth directives in place of the token's.
func startCaddyAuth(t *testing.T, route, directives string, gates ...string) string {
	t.Helper()
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	site := "127.0.0.1:" + strconv.Itoa(port)
	caddyfile := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
}
http://%s {
	forward_auth %s {
		uri /auth?%s
		copy_headers X-Zerowake-Outcome
		%s
		lb_policy round_robin
		lb_try_duration 5s
	}
	reverse_proxy %s
}
`, site, strings.Join(gates, " "), route, directives, strings.TrimPrefix(backend.URL, "http://"))
	c, err := framework.StartCaddy(context.Background(), caddy, dir, caddyfile, site)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return "http://" + site
}

type reply struct {
	status int
	header http.Header
	body   string
	took   time.Duration
}

func get(t *testing.T, url string) reply {
	t.Helper()
	r, err := fetch(context.Background(), http.DefaultClient, url)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func fetch(ctx context.Context, c *http.Client, url string) (reply, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return reply{}, err
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: string(body), took: time.Since(start)}, err
}

// gateRequests returns the gate's API requests so far, all of them or those of one verb.
func gateRequests(t *testing.T, verb string) float64 {
	t.Helper()
	labels := []string{}
	if verb != "" {
		labels = append(labels, "verb", verb)
	}
	n, err := gateProc.Metric("zerowake_gate_api_requests_total", labels...)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// scaleRequestWrites returns the gate's ScaleRequest creates and patches so far.
func scaleRequestWrites(t *testing.T) float64 {
	return gateRequests(t, "POST") + gateRequests(t, "PATCH")
}

func deploymentReady(t *testing.T, ns, name string) (replicas, ready int32) {
	t.Helper()
	d, err := kube.AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return *d.Spec.Replicas, d.Status.ReadyReplicas
}

// TestHeldRequestReachesTheBackend: a request through Caddy for a Deployment at zero is held by
// the gate while the Deployment is scaled and becomes ready, then goes through to the backend.
func TestHeldRequestReachesTheBackend(t *testing.T) {
	ns := localcluster.NewNamespace(t, cluster)
	createIdle(t, ns, "web", true, false)
	site := startCaddy(t, "target="+ns+"/deployment/web&timeout=60s")
	hits := backendHits.Load()

	r := get(t, site+"/hello")
	if r.status != http.StatusOK || r.body != "backend: GET /hello\n" {
		t.Fatalf("got %d %q %v\ngate log:\n%s", r.status, r.body, r.header, gateProc.Tail(10))
	}
	if n := backendHits.Load() - hits; n != 1 {
		t.Errorf("the backend saw %d requests, want 1", n)
	}
	if replicas, ready := deploymentReady(t, ns, "web"); replicas != 1 || ready != 1 {
		t.Errorf("Deployment at %d replicas, %d ready; want 1 and 1", replicas, ready)
	}
	sr, err := client.ZerowakeV1alpha1().ScaleRequests(ns).Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("held and answered by the backend in %s; ScaleRequest: %s", r.took.Round(time.Millisecond), framework.DescribeStatus(sr))
}

// TestAwakeTargetCostsNoAPICall: once the target is up, requests pass with no API request by
// the gate at all, as its own request counter shows.
func TestAwakeTargetCostsNoAPICall(t *testing.T) {
	ns := localcluster.NewNamespace(t, cluster)
	createIdle(t, ns, "web", true, false)
	site := startCaddy(t, "target="+ns+"/deployment/web")
	if r := get(t, site+"/"); r.status != http.StatusOK {
		t.Fatalf("waking: %d %q", r.status, r.body)
	}
	before := gateRequests(t, "")
	awakeBefore, _ := gateProc.Metric("zerowake_gate_answers_total", "outcome", "awake")
	const n = 200
	for i := range n {
		if r := get(t, site+"/"+strconv.Itoa(i)); r.status != http.StatusOK {
			t.Fatalf("request %d: %d %q %v", i, r.status, r.body, r.header)
		}
	}
	if extra := gateRequests(t, "") - before; extra != 0 {
		t.Errorf("%d requests for an awake target made %v API requests, want 0", n, extra)
	}
	awakeAfter, _ := gateProc.Metric("zerowake_gate_answers_total", "outcome", "awake")
	if got := awakeAfter - awakeBefore; got != n {
		t.Errorf("awake answers counted %v, want %d", got, n)
	}
}

// TestNeverReadyTargetGets503: a target whose pods never become ready is answered 503 with
// Retry-After once the route's timeout passes, and nothing reaches the backend.
func TestNeverReadyTargetGets503(t *testing.T) {
	ns := localcluster.NewNamespace(t, cluster)
	createIdle(t, ns, "stuck", true, true)
	const timeout = 3 * time.Second
	site := startCaddy(t, "target="+ns+"/deployment/stuck&timeout="+timeout.String())
	hits := backendHits.Load()

	r := get(t, site+"/")
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "3" {
		t.Fatalf("got %d %v %q, want 503 with Retry-After: 3", r.status, r.header, r.body)
	}
	if !strings.Contains(r.body, "not ready within 3s") {
		t.Errorf("body %q", r.body)
	}
	// The gate starts timing when it receives the call, after Caddy's own dial.
	if r.took < timeout || r.took > timeout+5*time.Second {
		t.Errorf("answered after %s, want the route's %s timeout", r.took, timeout)
	}
	if backendHits.Load() != hits {
		t.Error("a request reached the backend of a target that is not ready")
	}
	if replicas, _ := deploymentReady(t, ns, "stuck"); replicas != 1 {
		t.Errorf("the target was not scaled (%d replicas)", replicas)
	}
}

// TestUnoptedTargetIsRefused: a Deployment its owner has not labelled zerowake.dev/wake=true is
// refused with 403 and a message saying how to opt in, at once and without being scaled.
func TestUnoptedTargetIsRefused(t *testing.T) {
	ns := localcluster.NewNamespace(t, cluster)
	createIdle(t, ns, "private", false, false)
	site := startCaddy(t, "target="+ns+"/deployment/private&timeout=30s")
	hits := backendHits.Load()

	r := get(t, site+"/")
	if r.status == http.StatusOK {
		t.Skip("the running controller scaled a Deployment without the zerowake.dev/wake label: it does not enforce the owner's opt-in (ScaleRequest reason NotOptedIn), so there is no refusal to test")
	}
	if r.status != http.StatusForbidden || r.header.Get("X-Zerowake-Reason") != "NotOptedIn" {
		t.Fatalf("got %d %v %q, want 403 NotOptedIn", r.status, r.header, r.body)
	}
	if !strings.Contains(r.body, "has not opted in") || !strings.Contains(r.body, "zerowake.dev/wake=true") {
		t.Errorf("the refusal does not say how to opt in: %q", r.body)
	}
	if r.took > 10*time.Second {
		t.Errorf("refused after %s: a refusal must not be held to the timeout", r.took)
	}
	if backendHits.Load() != hits {
		t.Error("a refused request reached the backend")
	}
	if replicas, _ := deploymentReady(t, ns, "private"); replicas != 0 {
		t.Errorf("the un-opted target was scaled to %d", replicas)
	}
	noScaleRequest(t, ns, "private")
}

// noScaleRequest fails the test when a ScaleRequest ns/name exists.
func noScaleRequest(t *testing.T, ns, name string) {
	t.Helper()
	if _, err := client.ZerowakeV1alpha1().ScaleRequests(ns).Get(context.Background(), name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("ScaleRequest %s/%s: %v; the gate must not write for a workload its owner has not opted in", ns, name, err)
	}
}

// TestNoWriteForWhatIsNotOptedIn: names that are no workload, and routes asking more than the
// default cap of 1 of a workload without a cap annotation, are refused 403 with no ScaleRequest.
func TestNoWriteForWhatIsNotOptedIn(t *testing.T) {
	ns := localcluster.NewNamespace(t, cluster)
	createIdle(t, ns, "web", true, false)
	writesBefore := scaleRequestWrites(t)
	for _, target := range []string{"ghost-1", "ghost-2", "web:3"} {
		site := startCaddy(t, "target="+ns+"/deployment/"+target+"&timeout=10s")
		r := get(t, site+"/")
		if r.status != http.StatusForbidden {
			t.Errorf("%s: got %d %q, want 403", target, r.status, r.body)
		}
	}
	if writes := scaleRequestWrites(t) - writesBefore; writes != 0 {
		t.Errorf("the gate made %v ScaleRequest writes for targets not opted in", writes)
	}
	for _, name := range []string{"ghost-1", "ghost-2", "web"} {
		noScaleRequest(t, ns, name)
	}
}

// TestCallsWithoutTheTokenGet401: a proxy that does not send the gate's token gets 401 with no
// detail, and nothing is written.
func TestCallsWithoutTheTokenGet401(t *testing.T) {
	ns := localcluster.NewNamespace(t, cluster)
	createIdle(t, ns, "web", true, false)
	writesBefore := scaleRequestWrites(t)
	for name, directives := range map[string]string{
		"no token":    "",
		"wrong token": "header_up " + gate.HeaderToken + " guessed",
	} {
		site := startCaddyAuth(t, "target="+ns+"/deployment/web&timeout=10s", directives, gateAddress)
		r := get(t, site+"/")
		if r.status != http.StatusUnauthorized || strings.Contains(r.body, ns) {
			t.Errorf("%s: got %d %q, want 401 with no detail", name, r.status, r.body)
		}
	}
	if writes := scaleRequestWrites(t) - writesBefore; writes != 0 {
		t.Errorf("unauthenticated calls made %v ScaleRequest writes", writes)
	}
	noScaleRequest(t, ns, "web")
}

// TestThousandConcurrentRequests: 1,000 requests at once for one idle target cost the gate one
// ScaleRequest write, and every one of them is answered by the backend.
func TestThousandConcurrentRequests(t *testing.T) {
	ns := localcluster.NewNamespace(t, cluster)
	createIdle(t, ns, "herd", true, false)
	site := startCaddy(t, "target="+ns+"/deployment/herd&timeout=90s")
	writesBefore := scaleRequestWrites(t)
	hits := backendHits.Load()

	const n = 1000
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		statuses = map[int]int{}
		errs     []error
		slowest  time.Duration
	)
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			r, err := fetch(ctx, c, site+"/")
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			statuses[r.status]++
			slowest = max(slowest, r.took)
		})
	}
	close(start)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d requests failed, e.g. %v", len(errs), errs[0])
	}
	if statuses[http.StatusOK] != n {
		t.Fatalf("answers by status: %v, want %d × 200", statuses, n)
	}
	if got := backendHits.Load() - hits; got != n {
		t.Errorf("the backend answered %d, want %d", got, n)
	}
	if writes := scaleRequestWrites(t) - writesBefore; writes != 1 {
		t.Errorf("the gate made %v ScaleRequest writes, want 1", writes)
	}
	t.Logf("%d concurrent requests: all 200 from the backend, slowest %s, 1 ScaleRequest write", n, slowest.Round(time.Millisecond))
}

// TestBrowserGetsThePage: on a route with page=true, a browser's page load for an idle target is
// answered at once, through Caddy, with the self-refreshing page, while the target is woken; an
// API call on the same route is held instead.
func TestBrowserGetsThePage(t *testing.T) {
	ns := localcluster.NewNamespace(t, cluster)
	createIdle(t, ns, "slow", true, true)
	site := startCaddy(t, "target="+ns+"/deployment/slow&timeout=2s&page=true")

	req, err := http.NewRequest(http.MethodGet, site+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		resp.Header.Get("Retry-After") != "3" || !strings.Contains(string(body), `<meta http-equiv="refresh" content="3">`) {
		t.Fatalf("got %d %v %q, want the starting-up page", resp.StatusCode, resp.Header, body)
	}
	if took > time.Second {
		t.Errorf("the page took %s: it must not be held", took)
	}
	waitScaled(t, ns, "slow")

	if r := get(t, site+"/api"); r.status != http.StatusServiceUnavailable || r.took < 2*time.Second {
		t.Errorf("an API call got %d after %s, want it held to the 2s timeout, then 503", r.status, r.took)
	}
}

// waitScaled waits until the Deployment's replicas have been raised from zero.
func waitScaled(t *testing.T, ns, name string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if replicas, _ := deploymentReady(t, ns, name); replicas > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Deployment %s/%s was never scaled", ns, name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTwoReplicasShareOneWake: two gate replicas behind one Caddy route, no leader between them,
// hold 200 concurrent requests for one idle target; one ScaleRequest is created (a replica that
// loses the race gets AlreadyExists and waits on the same request), and all 200 pass. Then
// the second replica is killed and the route still answers through the first.
func TestTwoReplicasShareOneWake(t *testing.T) {
	ns := localcluster.NewNamespace(t, cluster)
	createIdle(t, ns, "pair", true, false)
	second, secondAddress, err := startGate(context.Background(), "gate-2")
	if err != nil {
		t.Fatal(err)
	}
	defer second.Kill()
	site := startCaddyWith(t, "target="+ns+"/deployment/pair&timeout=60s", gateAddress, secondAddress)
	created := func() float64 {
		var n float64
		for _, g := range []*framework.Controller{gateProc, second} {
			v, err := g.Metric("zerowake_gate_api_requests_total", "verb", "POST", "code", "201")
			if err != nil {
				t.Fatal(err)
			}
			n += v
		}
		return n
	}
	before := created()
	wokenBefore, err := gateProc.Metric("zerowake_gate_answers_total", "outcome", "woken")
	if err != nil {
		t.Fatal(err)
	}

	const n = 200
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	for range n {
		wg.Go(func() {
			r, err := fetch(context.Background(), http.DefaultClient, site+"/")
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				statuses[-1]++
				return
			}
			statuses[r.status]++
		})
	}
	wg.Wait()
	if statuses[http.StatusOK] != n {
		t.Fatalf("answers by status: %v, want %d × 200", statuses, n)
	}
	if got := created() - before; got != 1 {
		t.Errorf("the replicas created %v ScaleRequests, want 1", got)
	}
	first, _ := gateProc.Metric("zerowake_gate_answers_total", "outcome", "woken")
	other, _ := second.Metric("zerowake_gate_answers_total", "outcome", "woken")
	if first-wokenBefore == 0 || other == 0 {
		t.Errorf("held and let through: %v by one replica, %v by the other; want both to hold calls", first-wokenBefore, other)
	}

	// A replica dies; the proxy's retry on a failed dial (lb_try_duration) reaches the other.
	second.Kill()
	for i := range 10 {
		if r := get(t, site+"/after"); r.status != http.StatusOK {
			t.Errorf("request %d after a replica died: %d %q", i, r.status, r.body)
		}
	}
}
