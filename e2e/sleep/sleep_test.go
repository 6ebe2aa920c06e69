package sleep

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/e2e/framework"
	"github.com/zerowake/zerowake/gate"
	"github.com/zerowake/zerowake/hack/localcluster"
)

// createSleepy creates Deployment name in ns at zero replicas, opted in to waking and asking to
// sleep after idleAfter.
func createSleepy(t *testing.T, ns, name string) {
	t.Helper()
	createWorkload(t, ns, name, map[string]string{v1alpha1.AnnotationIdleAfter: idleAfter.String()})
}

// createWorkload creates Deployment name in ns at zero replicas, opted in to waking, with
// annotations.
func createWorkload(t *testing.T, ns, name string, annotations map[string]string) {
	t.Helper()
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
			Labels:      map[string]string{v1alpha1.LabelWake: "true"},
			Annotations: annotations},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](0),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1",
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m")}}}}},
			},
		},
	}
	if _, err := kube.AppsV1().Deployments(ns).Create(context.Background(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// witness is the backend standing in for a target's pods: for every request that reaches it,
// it reads the Deployment from the API server and counts a request served while the target
// had no replicas, or none ready. The read comes after the gate answered, so a target that was
// up when the gate answered and lowered before the read counts against the protocol too. The
// other way round, a target at zero when the gate answered and raised again before the read
// (another call woke it) still counts: its status then either shows no ready replica yet, or
// has not caught up with the raise (observedGeneration behind generation) and so still shows
// the pods the sleep removed — which is not a ready pod either.
type witness struct {
	ns, name        string
	served          atomic.Int64
	atZero, unready atomic.Int64
	mu              sync.Mutex
	violations      []string
	// unsafe holds the paths of the calls counted in atZero or unready.
	unsafe map[string]bool
	server *httptest.Server
}

func newWitness(t *testing.T, ns, name string) *witness {
	w := &witness{ns: ns, name: name, unsafe: map[string]bool{}}
	w.server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		d, err := kube.AppsV1().Deployments(ns).Get(r.Context(), name, metav1.GetOptions{})
		if err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		w.served.Add(1)
		at := time.Now().Format("15:04:05.000")
		switch {
		case *d.Spec.Replicas == 0:
			w.atZero.Add(1)
			w.note(r.URL.Path, fmt.Sprintf("%s served at 0 replicas (%s)", r.URL.Path, at))
		case d.Status.ObservedGeneration < d.Generation:
			w.unready.Add(1)
			w.note(r.URL.Path, fmt.Sprintf("%s served while the status had not caught up with %d replicas (generation %d, observed %d; %s)",
				r.URL.Path, *d.Spec.Replicas, d.Generation, d.Status.ObservedGeneration, at))
		case d.Status.ReadyReplicas == 0:
			w.unready.Add(1)
			w.note(r.URL.Path, fmt.Sprintf("%s served with 0 ready of %d (%s)", r.URL.Path, *d.Spec.Replicas, at))
		}
		fmt.Fprintf(rw, "backend: %s\n", r.URL.Path)
	}))
	t.Cleanup(w.server.Close)
	return w
}

func (w *witness) note(path, s string) {
	w.mu.Lock()
	w.violations = append(w.violations, s)
	w.unsafe[path] = true
	w.mu.Unlock()
}

// startCaddy runs Caddy with one site whose requests ask the gate replicas (round robin) about
// the target, then go to the witness.
func startCaddy(t *testing.T, ns, name string, w *witness) string {
	t.Helper()
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	site := "127.0.0.1:" + strconv.Itoa(port)
	caddyfile := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
}
http://%s {
	forward_auth %s {
		uri /auth?target=%s/deployment/%s&timeout=60s
		header_up %s %s
		lb_policy round_robin
		lb_try_duration 5s
	}
	reverse_proxy %s
}
`, site, strings.Join(gateAddresses, " "), ns, name, gate.HeaderToken, gateToken, strings.TrimPrefix(w.server.URL, "http://"))
	c, err := framework.StartCaddy(context.Background(), caddy, t.TempDir(), caddyfile, site)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return "http://" + site
}

// outcome counts what the callers got.
type outcome struct {
	sent, ok, lost atomic.Int64
	mu             sync.Mutex
	failures       []string
}

func (o *outcome) call(site, path string) {
	o.sent.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, site+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		o.fail(path + ": " + err.Error())
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "backend: ") {
		o.fail(fmt.Sprintf("%s: %d %q (%s)", path, resp.StatusCode, strings.TrimSpace(string(body)), resp.Header.Get("X-Zerowake-Reason")))
		return
	}
	o.ok.Add(1)
}

func (o *outcome) fail(s string) {
	o.lost.Add(1)
	o.mu.Lock()
	o.failures = append(o.failures, s)
	o.mu.Unlock()
}

// phaseOf reads the target's ScaleRequest phase, "" when there is none yet.
func phaseOf(t *testing.T, ns, name string) (v1alpha1.ScaleRequestPhase, *v1alpha1.ScaleRequest) {
	sr, err := client.ZerowakeV1alpha1().ScaleRequests(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return "", nil
	}
	return sr.Status.Phase, sr
}

// raceCycles drives cycles of a target: a call wakes it (or finds it up), then after a random
// pause around the moment it turns idle (idle-after plus the renewal lag, 2.2s) more calls
// come, before, during or after the drain and the scale to zero. Some pauses are long enough
// for it to be Asleep, so that the next call wakes it from zero.
func raceCycles(t *testing.T, site string, cycles int, o *outcome, between func()) {
	var wg sync.WaitGroup
	for i := range cycles {
		o.call(site, "/cycle-"+strconv.Itoa(i))
		// The target turns idle 2.2s after the last renewal the controller saw (which may come
		// up to 1.2s after the call); draining and the scale take tens of milliseconds more.
		pause := 1500*time.Millisecond + rand.N(3500*time.Millisecond)
		time.Sleep(pause)
		// A second call races the first one's sleep from another connection.
		wg.Go(func() {
			time.Sleep(rand.N(400 * time.Millisecond))
			o.call(site, "/race-"+strconv.Itoa(i))
		})
		if between != nil {
			between()
		}
	}
	wg.Wait()
}

func report(t *testing.T, name string, o *outcome, w *witness) {
	t.Helper()
	t.Logf("%s: %d calls, %d answered by the backend, %d lost; the backend saw %d, %d at 0 replicas, %d with none ready",
		name, o.sent.Load(), o.ok.Load(), o.lost.Load(), w.served.Load(), w.atZero.Load(), w.unready.Load())
	if o.lost.Load() != 0 {
		t.Errorf("%s: %d calls lost (every call must reach the backend): %v\ncontroller:\n%s", name, o.lost.Load(), o.failures, ctrl.Tail(20))
	}
	if w.atZero.Load() != 0 || w.unready.Load() != 0 {
		t.Errorf("%s: calls let through to a target at zero or with nothing ready (the gate answers 200 only on a truthful Ready): %v", name, w.violations)
	}
}

func metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	v, err := ctrl.Metric(name, labels...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestSleepWakeRace: many sleep and wake cycles of three targets at once, with calls arriving at
// random around each idle moment, through Caddy and two gate replicas: a plain Deployment, one
// under an HPA (minimum 1), and one whose replicas a GitOps loop sets back to 1 whenever it finds
// them at 0. Every call must reach the backend, and none while its target is at zero or has
// nothing ready. The GitOps target must end with the controller giving up on it
// (SleepOverridden) rather than fighting on.
func TestSleepWakeRace(t *testing.T) {
	ns := localcluster.NewNamespace(t, cluster)
	sleepsBefore := metric(t, "zerowake_sleeps_total")
	wakesBefore := metric(t, "zerowake_wakes_from_sleep_total")

	type target struct {
		name    string
		cycles  int
		o       outcome
		w       *witness
		site    string
		between func()
	}
	// Three plain targets cycle side by side, so that 30 of their cycles take the time of 10.
	targets := []*target{{name: "plain-1", cycles: 10}, {name: "plain-2", cycles: 10}, {name: "plain-3", cycles: 10},
		{name: "hpa", cycles: 10}, {name: "gitops", cycles: 8}}
	for _, tg := range targets {
		createSleepy(t, ns, tg.name)
		tg.w = newWitness(t, ns, tg.name)
		tg.site = startCaddy(t, ns, tg.name, tg.w)
	}
	if _, err := kube.AutoscalingV2().HorizontalPodAutoscalers(ns).Create(context.Background(), &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "hpa", Namespace: ns},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "hpa"},
			MinReplicas:    ptr.To[int32](1), MaxReplicas: 3,
			Metrics: []autoscalingv2.MetricSpec{{Type: autoscalingv2.ResourceMetricSourceType, Resource: &autoscalingv2.ResourceMetricSource{
				Name: corev1.ResourceCPU, Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptr.To[int32](80)}}}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The GitOps tool: every 700ms, a Deployment it finds at 0 is set back to 1, as a sync of
	// a manifest saying replicas: 1 would.
	gitopsCtx, stopGitops := context.WithCancel(context.Background())
	defer stopGitops()
	var resets atomic.Int64
	go func() {
		for gitopsCtx.Err() == nil {
			time.Sleep(700 * time.Millisecond)
			s, err := kube.AppsV1().Deployments(ns).GetScale(gitopsCtx, "gitops", metav1.GetOptions{})
			if err != nil || s.Spec.Replicas != 0 {
				continue
			}
			s.Spec.Replicas = 1
			if _, err := kube.AppsV1().Deployments(ns).UpdateScale(gitopsCtx, "gitops", s, metav1.UpdateOptions{}); err == nil {
				resets.Add(1)
			}
		}
	}()

	start := time.Now()
	var wg sync.WaitGroup
	for _, tg := range targets {
		wg.Go(func() { raceCycles(t, tg.site, tg.cycles, &tg.o, tg.between) })
	}
	wg.Wait()
	stopGitops()
	took := time.Since(start)

	sleeps := metric(t, "zerowake_sleeps_total") - sleepsBefore
	wakes := metric(t, "zerowake_wakes_from_sleep_total") - wakesBefore
	aborted := map[string]float64{}
	for _, reason := range []string{"activity", "signal", "target_changed", "restart", "overridden"} {
		aborted[reason] = metric(t, "zerowake_sleep_aborted_total", "reason", reason)
	}
	t.Logf("%s: %.0f sleeps, %.0f wakes from sleep, sleeps called off or undone %v, %d GitOps resets",
		took.Round(time.Second), sleeps, wakes, aborted, resets.Load())
	for _, tg := range targets {
		report(t, tg.name, &tg.o, tg.w)
	}
	cycles := 0
	for _, tg := range targets {
		cycles += tg.cycles
	}
	// Runs here see 19-27 sleeps and 12-21 wakes from sleep in 48 cycles (fewer on a loaded
	// machine, where more drains are called off by a call). Fewer than 10 sleeps would mean the
	// calls no longer come around the idle moment, and the test no longer races anything.
	if sleeps < 10 {
		t.Errorf("only %.0f sleeps in %d cycles: the race did not happen often enough to prove anything", sleeps, cycles)
	}
	if wakes < 5 {
		t.Errorf("only %.0f wakes from sleep", wakes)
	}
	// The GitOps loop undid its sleeps without a call; the third within the hour stops them.
	_, sr := phaseOf(t, ns, "gitops")
	if sr == nil {
		t.Fatal("no ScaleRequest for gitops")
	}
	if cond := meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionSleep); cond == nil || cond.Reason != v1alpha1.ReasonSleepOverridden {
		t.Errorf("gitops: Sleep condition %+v, want reason %s after its sleeps were undone", cond, v1alpha1.ReasonSleepOverridden)
	}
	// Under the HPA the target stays asleep: an HPA does not act on a target at zero.
	phase, _ := phaseOf(t, ns, "hpa")
	deadline := time.Now().Add(10 * time.Second) // idle after 2s; the drain waits for the gates' acknowledgements
	for phase != v1alpha1.PhaseAsleep && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		phase, _ = phaseOf(t, ns, "hpa")
	}
	if phase != v1alpha1.PhaseAsleep {
		t.Fatalf("hpa: phase %s 10s after the last call, want Asleep", phase)
	}
	time.Sleep(3 * time.Second) // a few of the HPA controller's syncs (every 15s by default; this is a sample)
	if s, err := kube.AppsV1().Deployments(ns).GetScale(context.Background(), "hpa", metav1.GetOptions{}); err != nil || s.Spec.Replicas != 0 {
		t.Errorf("hpa: replicas %v (err %v) while asleep, want 0", s, err)
	}
}
