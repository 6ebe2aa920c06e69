package gate

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/generated/clientset/versioned/fake"
	"github.com/zerowake/zerowake/wake"
)

var web = wake.Deployment("shop", "web")

func newTestGate(t *testing.T, cfg Config) (*Gate, *fakeWaker, *Metrics) {
	t.Helper()
	f := newFakeWaker()
	m := NewMetrics(prometheus.NewRegistry())
	return New(f, cfg, m, logr.Discard()), f, m
}

func route(timeout time.Duration, targets ...wake.Target) *Route {
	return &Route{Targets: targets, Timeout: timeout}
}

func TestCheckLetsAnAwakeTargetThroughWithoutWaking(t *testing.T) {
	g, f, m := newTestGate(t, Config{})
	f.setReady(web)
	a := g.Check(context.Background(), route(time.Second, web), "GET", "")
	if a.Outcome != OutcomeAwake || a.Status() != 200 {
		t.Fatalf("answer %+v, want awake 200", a)
	}
	if wakes, waits := f.counts(web); wakes+waits != 0 {
		t.Errorf("an awake target was woken %d times and waited for %d times", wakes, waits)
	}
	if n := value(m.answers.WithLabelValues("awake")); n != 1 {
		t.Errorf("awake answers counted %v", n)
	}
}

func TestCheckHoldsUntilReady(t *testing.T) {
	g, f, m := newTestGate(t, Config{})
	done := make(chan Answer)
	go func() { done <- g.Check(context.Background(), route(10*time.Second, web), "GET", "") }()
	waitFor(t, "the call to be held", func() bool { return g.Held(web) == 1 })
	if n := value(m.heldNow); n != 1 {
		t.Errorf("held gauge %v, want 1", n)
	}
	f.setReady(web)
	a := <-done
	if a.Outcome != OutcomeWoken || a.Status() != 200 {
		t.Fatalf("answer %+v, want woken 200", a)
	}
	if wakes, _ := f.counts(web); wakes != 1 {
		t.Errorf("Wake called %d times, want 1", wakes)
	}
	if g.Held(web) != 0 || value(m.heldNow) != 0 {
		t.Error("the held slot was not released")
	}
	var h dto.Metric
	if err := m.holdTime.WithLabelValues("woken").(prometheus.Histogram).Write(&h); err != nil || h.GetHistogram().GetSampleCount() != 1 {
		t.Errorf("woken hold times observed: %d, want 1", h.GetHistogram().GetSampleCount())
	}
}

func TestCheckGivesUpAtTheRouteTimeout(t *testing.T) {
	g, _, _ := newTestGate(t, Config{RetryAfter: 3 * time.Second})
	start := time.Now()
	a := g.Check(context.Background(), route(50*time.Millisecond, web), "GET", "")
	if took := time.Since(start); took < 50*time.Millisecond || took > 2*time.Second {
		t.Errorf("gave up after %s, want the 50ms route timeout", took)
	}
	if a.Outcome != OutcomeTimeout || a.Status() != 503 || a.RetryAfter != 3*time.Second {
		t.Fatalf("answer %+v, want timeout 503 with Retry-After 3s", a)
	}
}

func TestCheckRefusesATargetWhoseOwnerHasNotOptedIn(t *testing.T) {
	g, f, _ := newTestGate(t, Config{})
	f.failWith(web, &wake.FailedError{Namespace: "shop", Name: "web", Condition: "Scaled", Reason: ReasonNotOptedIn})
	start := time.Now()
	a := g.Check(context.Background(), route(time.Minute, web), "GET", "")
	if a.Outcome != OutcomeRefused || a.Status() != 403 {
		t.Fatalf("answer %+v, want refused 403", a)
	}
	if time.Since(start) > time.Second {
		t.Error("a refusal was held")
	}
}

func TestCheckCapsHeldRequestsPerTarget(t *testing.T) {
	g, f, m := newTestGate(t, Config{MaxHeldPerTarget: 3})
	other := wake.Deployment("shop", "other")
	ctx := context.Background()
	answers := make(chan Answer, 3)
	for range 3 {
		go func() { answers <- g.Check(ctx, route(10*time.Second, web), "GET", "") }()
	}
	waitFor(t, "three held calls", func() bool { return g.Held(web) == 3 })
	if a := g.Check(ctx, route(10*time.Second, web), "GET", ""); a.Outcome != OutcomeOverflow || a.Status() != 503 || a.RetryAfter <= 0 {
		t.Fatalf("fourth call: %+v, want overflow 503 with Retry-After", a)
	}
	// A group that includes the full target takes no slot on its other target either.
	if a := g.Check(ctx, route(10*time.Second, other, web), "GET", ""); a.Outcome != OutcomeOverflow {
		t.Fatalf("group with a full target: %+v, want overflow", a)
	}
	if g.Held(other) != 0 {
		t.Error("a refused group kept a slot on its other target")
	}
	if n := value(m.answers.WithLabelValues("overflow")); n != 2 {
		t.Errorf("overflow answers counted %v, want 2", n)
	}
	f.setReady(web)
	for range 3 {
		if a := <-answers; a.Outcome != OutcomeWoken {
			t.Errorf("held call: %+v", a)
		}
	}
}

func TestCheckCapsHeldRequestsInAll(t *testing.T) {
	g, f, _ := newTestGate(t, Config{MaxHeld: 2})
	a, b, c := wake.Deployment("shop", "a"), wake.Deployment("shop", "b"), wake.Deployment("shop", "c")
	answers := make(chan Answer, 2)
	go func() { answers <- g.Check(context.Background(), route(10*time.Second, a), "GET", "") }()
	go func() { answers <- g.Check(context.Background(), route(10*time.Second, b), "GET", "") }()
	waitFor(t, "two held calls", func() bool { return g.Held(a) == 1 && g.Held(b) == 1 })
	if got := g.Check(context.Background(), route(10*time.Second, c), "GET", ""); got.Outcome != OutcomeOverflow {
		t.Fatalf("third call, another target: %+v, want overflow", got)
	}
	f.setReady(a)
	if got := <-answers; got.Outcome != OutcomeWoken {
		t.Fatalf("held call: %+v", got)
	}
	f.setReady(c)
	if got := g.Check(context.Background(), route(10*time.Second, c), "GET", ""); got.Outcome != OutcomeAwake {
		t.Fatalf("after a slot was freed: %+v", got)
	}
	f.setReady(b)
	<-answers
}

func TestCheckWakesAGroupTogether(t *testing.T) {
	g, f, _ := newTestGate(t, Config{})
	db := wake.StatefulSet("shop", "db")
	done := make(chan Answer)
	go func() { done <- g.Check(context.Background(), route(10*time.Second, web, db), "GET", "") }()
	waitFor(t, "both targets woken", func() bool {
		w1, _ := f.counts(web)
		w2, _ := f.counts(db)
		return w1 == 1 && w2 == 1
	})
	f.setReady(db)
	select {
	case a := <-done:
		t.Fatalf("answered %+v while web is not ready", a)
	case <-time.After(50 * time.Millisecond):
	}
	f.setReady(web)
	if a := <-done; a.Outcome != OutcomeWoken {
		t.Fatalf("answer %+v, want woken", a)
	}
}

func TestCheckEndsAGroupOnTheFirstFailure(t *testing.T) {
	g, f, _ := newTestGate(t, Config{})
	db := wake.StatefulSet("shop", "db")
	f.failWith(db, &wake.FailedError{Namespace: "shop", Name: "db", Reason: "TargetNotFound"})
	start := time.Now()
	a := g.Check(context.Background(), route(time.Minute, web, db), "GET", "")
	if a.Outcome != OutcomeFailed || a.Reason != "TargetNotFound" {
		t.Fatalf("answer %+v, want the db's failure", a)
	}
	if time.Since(start) > 5*time.Second {
		t.Error("the group waited for web after db failed")
	}
}

func TestCheckAnswersBrowsersWithThePage(t *testing.T) {
	g, f, _ := newTestGate(t, Config{})
	r := route(time.Minute, web)
	r.Page = true
	a := g.Check(context.Background(), r, "GET", "text/html")
	if a.Outcome != OutcomePage || a.Status() != 503 || a.RetryAfter <= 0 {
		t.Fatalf("answer %+v, want the page", a)
	}
	if wakes, waits := f.counts(web); wakes != 1 || waits != 0 {
		t.Errorf("page: %d wakes, %d waits; want the target woken and the call not held", wakes, waits)
	}
	// An API call on the same route is held.
	done := make(chan Answer)
	go func() { done <- g.Check(context.Background(), r, "POST", "application/json") }()
	waitFor(t, "the API call to be held", func() bool { return g.Held(web) == 1 })
	f.setReady(web)
	if a := <-done; a.Outcome != OutcomeWoken {
		t.Fatalf("API call: %+v", a)
	}
}

func TestCheckRefusesRatherThanShowingThePageForever(t *testing.T) {
	g, f, _ := newTestGate(t, Config{})
	f.target(web).action = wake.ActionRecentlyFailed
	f.failWith(web, &wake.FailedError{Namespace: "shop", Name: "web", Reason: ReasonNotOptedIn})
	r := route(time.Minute, web)
	r.Page = true
	if a := g.Check(context.Background(), r, "GET", "text/html"); a.Outcome != OutcomeRefused {
		t.Fatalf("answer %+v, want refused", a)
	}
}

func TestCheckReportsTheProxyHangingUp(t *testing.T) {
	g, _, m := newTestGate(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Answer)
	go func() { done <- g.Check(ctx, route(time.Minute, web), "GET", "") }()
	waitFor(t, "the call to be held", func() bool { return g.Held(web) == 1 })
	cancel()
	if a := <-done; a.Outcome != OutcomeCanceled {
		t.Fatalf("answer %+v, want canceled", a)
	}
	if n := value(m.answers.WithLabelValues("canceled")); n != 1 {
		t.Errorf("canceled answers counted %v", n)
	}
}

// The real wake client over a fake clientset: a Ready ScaleRequest is answered from the
// informer, with no API request at all.
func TestReadyTargetCostsNoAPICall(t *testing.T) {
	now := metav1.NewMicroTime(time.Now())
	sr := &v1alpha1.ScaleRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Generation: 1},
		Spec:       v1alpha1.ScaleRequestSpec{ScaleTargetRef: web.Ref(), MinReplicas: 1, RequestedAt: &now},
		Status: v1alpha1.ScaleRequestStatus{ObservedGeneration: 1, Phase: v1alpha1.PhaseReady, Replicas: 1, ReadyReplicas: 1,
			Conditions: []metav1.Condition{
				{Type: v1alpha1.ConditionScaled, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonScaledFromZero, ObservedGeneration: 1, LastTransitionTime: metav1.Now()},
				{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonTargetReady, ObservedGeneration: 1, LastTransitionTime: metav1.Now()},
			}},
	}
	cs := fake.NewSimpleClientset(sr)
	client := wake.New(cs, wake.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer client.Stop()
	g := New(client, Config{}, nil, logr.Discard())
	for range 1000 {
		if a := g.Check(ctx, route(time.Second, web), "GET", ""); a.Outcome != OutcomeAwake {
			t.Fatalf("answer %+v, want awake", a)
		}
	}
	// The informer's own list and watch (the watch may be recorded after Start returns) are
	// the only requests there may be.
	for _, a := range cs.Actions() {
		if v := a.GetVerb(); v != "list" && v != "watch" {
			t.Errorf("1,000 answers for a Ready target made an API request: %v", a)
		}
	}
}

func BenchmarkCheckAwake(b *testing.B) {
	f := newFakeWaker()
	f.setReady(web)
	g := New(f, Config{}, NewMetrics(prometheus.NewRegistry()), logr.Discard())
	r := route(time.Second, web)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		g.Check(ctx, r, "GET", "")
	}
}

// value reads a counter or a gauge.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// The real wake client over a fake clientset: 1,000 calls held at once for an idle target cost
// one ScaleRequest write, and all pass once the controller (played here) reports it Ready.
func TestHerdCostsOneWrite(t *testing.T) {
	cs := fake.NewSimpleClientset()
	client := wake.New(cs, wake.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer client.Stop()
	before := len(cs.Actions())
	g := New(client, Config{}, nil, logr.Discard())

	const n = 1000
	answers := make(chan Answer, n)
	for range n {
		go func() { answers <- g.Check(ctx, route(20*time.Second, web), "GET", "") }()
	}
	waitFor(t, "every call to be held", func() bool { return g.Held(web) == n })
	var writes []string
	for _, a := range cs.Actions()[before:] {
		if a.GetVerb() != "list" && a.GetVerb() != "watch" && a.GetVerb() != "get" {
			writes = append(writes, a.GetVerb()+" "+a.GetResource().Resource)
		}
	}
	if len(writes) != 1 || writes[0] != "create scalerequests" {
		t.Fatalf("%d held calls made writes %v, want one create", n, writes)
	}

	sr, err := cs.ZerowakeV1alpha1().ScaleRequests("shop").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sr.Generation = 1
	sr.Status = v1alpha1.ScaleRequestStatus{ObservedGeneration: 1, Phase: v1alpha1.PhaseReady, Replicas: 1, ReadyReplicas: 1,
		Conditions: []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonTargetReady,
			ObservedGeneration: 1, LastTransitionTime: metav1.Now()}}}
	if _, err := cs.ZerowakeV1alpha1().ScaleRequests("shop").UpdateStatus(ctx, sr, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for range n {
		if a := <-answers; a.Outcome != OutcomeWoken {
			t.Fatalf("answer %+v, want woken", a)
		}
	}
}

// The real wake client over a fake clientset: a ScaleRequest the controller failed with
// NotOptedIn (the owner's opt-in contract) is refused at once, with no write.
func TestNotOptedInIsRefusedWithTheWakeClient(t *testing.T) {
	now := metav1.NewMicroTime(time.Now())
	sr := &v1alpha1.ScaleRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Generation: 1},
		Spec:       v1alpha1.ScaleRequestSpec{ScaleTargetRef: web.Ref(), MinReplicas: 1, RequestedAt: &now},
		Status: v1alpha1.ScaleRequestStatus{ObservedGeneration: 1, Phase: v1alpha1.PhaseFailed,
			Conditions: []metav1.Condition{{Type: v1alpha1.ConditionScaled, Status: metav1.ConditionFalse, Reason: ReasonNotOptedIn,
				Message: "Deployment/web is not labelled zerowake.dev/wake=true", ObservedGeneration: 1, LastTransitionTime: metav1.Now()}}},
	}
	cs := fake.NewSimpleClientset(sr)
	client := wake.New(cs, wake.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer client.Stop()
	g := New(client, Config{}, nil, logr.Discard())
	a := g.Check(ctx, route(5*time.Second, web), "GET", "")
	if a.Outcome != OutcomeRefused || a.Status() != 403 || a.Reason != ReasonNotOptedIn {
		t.Fatalf("answer %+v, want 403 NotOptedIn", a)
	}
	for _, act := range cs.Actions() {
		if v := act.GetVerb(); v != "list" && v != "watch" {
			t.Errorf("a refusal made an API request: %v", act)
		}
	}
}

// A page load wakes targets too, so it takes a held slot for as long as its Wake calls run:
// when the gate is full, it gets the overflow answer and wakes nothing.
func TestPageLoadsTakeAHeldSlot(t *testing.T) {
	g, f, _ := newTestGate(t, Config{MaxHeld: 1})
	done := make(chan Answer)
	go func() { done <- g.Check(context.Background(), route(10*time.Second, web), "POST", "") }()
	waitFor(t, "the API call to be held", func() bool { return g.Held(web) == 1 })

	other := wake.Deployment("shop", "other")
	r := route(time.Minute, other)
	r.Page = true
	if a := g.Check(context.Background(), r, "GET", "text/html"); a.Outcome != OutcomeOverflow {
		t.Errorf("page load with every held slot taken: %+v, want overflow", a)
	}
	if wakes, _ := f.counts(other); wakes != 0 {
		t.Errorf("the page load woke the target %d times past --max-held", wakes)
	}
	f.setReady(web)
	<-done
	if a := g.Check(context.Background(), r, "GET", "text/html"); a.Outcome != OutcomePage || g.Held(other) != 0 {
		t.Errorf("page load with a free slot: %+v (held %d), want the page and the slot released", a, g.Held(other))
	}
}
