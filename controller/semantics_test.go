package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	core "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/scaling"
)

// The tests in this file hold the controller to what its status says: each one is a case where
// a status, an event or a metric once told something that was not so.

// withMetrics gives the fixture's controller metrics a test can read.
func (f *fixture) withMetrics() *Metrics {
	m := NewMetrics(prometheus.NewRegistry(), func() float64 { return 0 })
	f.ctrl.metrics = m
	return m
}

// applyLastWrite puts the controller's last status write into the informer, as the watch would.
func (f *fixture) applyLastWrite() {
	f.t.Helper()
	writes := f.statusWrites()
	if len(writes) == 0 {
		f.t.Fatal("no status write to apply")
	}
	last := writes[len(writes)-1].DeepCopy()
	last.ResourceVersion = nextVersion(last.ResourceVersion)
	if err := f.put(last); err != nil {
		f.t.Fatal(err)
	}
	f.client.ClearActions()
}

// A signal older than the ready timeout (a fixed requestedAt, a resolver's clock behind ours, a
// successor after an outage) must not time out before the target was even looked at: the
// deadline runs from the controller's own observation.
func TestOldSignalDoesNotTimeOutUnobserved(t *testing.T) {
	sr := newRequest("Deployment")
	old := metav1.NewMicroTime(t0.Add(-2 * readyTimeout))
	sr.Spec.RequestedAt = &old
	f := newFixture(t, DefaultAllowedKinds, sr)
	f.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: 0, Replicas: 1, Scaled: true}

	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	status := f.lastStatus()
	if status.Phase != v1alpha1.PhaseScaling {
		t.Fatalf("a signal older than the ready timeout failed before its target was observed: %+v", status.Conditions)
	}
	expectCondition(t, status, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonWaitingForReplicas)
	f.applyLastWrite()

	// Observed, not ready yet, well within the timeout counted from the scale: still waiting.
	f.clock.Step(readyTimeout / 2)
	f.watcher.states[webID] = scaling.TargetState{Exists: true, Current: true, Replicas: 1}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	for _, w := range f.statusWrites() {
		if w.Status.Phase == v1alpha1.PhaseFailed {
			t.Fatalf("timed out %s after the scale, before the ready timeout %s: %+v", readyTimeout/2, readyTimeout, w.Status.Conditions)
		}
	}
	// A whole ready timeout after the controller started waiting, it does time out.
	f.clock.Step(readyTimeout / 2)
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	status = f.lastStatus()
	expectCondition(t, status, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonReadyTimeout)
}

// A target whose watch never listed it is never timed out: "(has 0)" would be a guess.
func TestUnobservedTargetIsNeverTimedOut(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, scaledRequest(t0.Add(-2*readyTimeout)))
	f.ctrl.hold(cache.ObjectName{Namespace: "shop", Name: "web"}, webID)
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	for _, w := range f.statusWrites() {
		if c := meta.FindStatusCondition(w.Status.Conditions, v1alpha1.ConditionReady); c != nil && c.Reason == v1alpha1.ReasonReadyTimeout {
			t.Fatalf("timed out a target nobody has seen: %s", c.Message)
		}
	}
}

// A refusal by the API (an admission webhook or policy, a validation error) is a failure with
// its own reason and the API's words, a Warning event, and a re-check: not a silent Pending
// retried forever.
func TestRejectedScaleFails(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, newRequest("Deployment"))
	denial := apierrors.NewInvalid(schema.GroupKind{Group: "autoscaling", Kind: "Scale"}, "web", nil)
	denial.ErrStatus.Message = `deployments.apps "web" is forbidden: ValidatingAdmissionPolicy 'no-scale' denied request: frozen`
	f.scaler.err = &scaling.Error{Reason: scaling.ReasonRejected, Target: "Deployment/web", Err: denial}

	if err := f.sync(); err != nil {
		t.Fatalf("a refusal must not spin in the transient backoff: %v", err)
	}
	status := f.lastStatus()
	if status.Phase != v1alpha1.PhaseFailed {
		t.Fatalf("phase %s, want Failed", status.Phase)
	}
	expectCondition(t, status, v1alpha1.ConditionScaled, metav1.ConditionFalse, v1alpha1.ReasonRejected)
	f.expectEvents("Warning Rejected the API server refused to scale apps/v1 Deployment/web: deployments.apps \"web\" is forbidden: ValidatingAdmissionPolicy 'no-scale' denied request: frozen")
	f.expectRequeueAfter(time.Second)
}

// A Forbidden answer (RBAC, or an API server whose authorizer is still warming up after a
// restart) is looked at again within seconds, not after a whole window.
func TestFailuresOthersMayFixAreRecheckedWithBackoff(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, newRequest("Deployment"))
	f.scaler.err = &scaling.Error{Reason: scaling.ReasonForbidden, Err: errors.New("forbidden")}
	key := cache.ObjectName{Namespace: "shop", Name: "web"}
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		if err := f.sync(); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			f.applyLastWrite()
		}
		f.expectRequeueAfter(want)
		f.ctrl.queue.Get()
		f.ctrl.queue.Done(key)
	}
	// Once it succeeds, the backoff starts afresh for the next failure.
	f.scaler.err = nil
	f.scaler.result = scaling.Result{Resource: deployments, Replicas: 1, Scaled: true}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if n := f.ctrl.recheck.NumRequeues(key); n != 0 {
		t.Fatalf("backoff not reset after success: %d", n)
	}
}

// A status write that fails after a successful scale must not lose the scale: the retry
// reports the write it made, not "already scaled".
func TestStatusWriteFailureAfterScaleKeepsTheOutcome(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, newRequest("Deployment"))
	m := f.withMetrics()
	f.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: 0, Replicas: 1, Scaled: true}
	failNext := true
	f.client.PrependReactor("update", "scalerequests", func(core.Action) (bool, runtime.Object, error) {
		if failNext {
			failNext = false
			return true, nil, apierrors.NewConflict(v1alpha1.Resource("scalerequests"), "web", fmt.Errorf("changed"))
		}
		return false, nil, nil
	})
	if err := f.sync(); !apierrors.IsConflict(err) {
		t.Fatalf("want the conflict returned, got %v", err)
	}
	f.expectEvents() // nothing announced that status does not say
	scaledAt := t0
	f.clock.Step(50 * time.Millisecond)
	// The target is up now; a fresh scale attempt would find it so.
	f.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: 1, Replicas: 1, Scaled: false}
	f.scaler.current = f.scaler.result
	f.client.ClearActions()
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	status := f.lastStatus()
	expectCondition(t, status, v1alpha1.ConditionScaled, metav1.ConditionTrue, v1alpha1.ReasonScaledFromZero)
	if status.LastScaleTime == nil || !status.LastScaleTime.Time.Equal(scaledAt) || status.PreviousReplicas == nil || *status.PreviousReplicas != 0 {
		t.Fatalf("the scale was lost: lastScaleTime %v previousReplicas %v", status.LastScaleTime, status.PreviousReplicas)
	}
	if len(f.scaler.calls) != 1 {
		t.Fatalf("scaled %d times for one signal", len(f.scaler.calls))
	}
	f.expectEvents("Normal ScaledFromZero Scaled Deployment/web from 0 to 1 replicas")
	if got := testutil.ToFloat64(m.scales.WithLabelValues(v1alpha1.ReasonScaledFromZero)); got != 1 {
		t.Fatalf("scale counted %v times", got)
	}
	if got := testutil.ToFloat64(m.scales.WithLabelValues(v1alpha1.ReasonAlreadyScaled)); got != 0 {
		t.Fatalf("the scale was also counted as AlreadyScaled %v times", got)
	}
	if f.ctrl.outcomes.len() != 0 {
		t.Fatal("the outcome was kept after status carried it")
	}
}

// A re-signal of a Ready request whose target is still up goes straight to Ready in one status
// write, and records no cold start: nothing started cold.
func TestResignalOfAnUpTargetIsReadyInOneWrite(t *testing.T) {
	sr := readyRequest()
	sr.Generation = 2
	f := newFixture(t, DefaultAllowedKinds, sr)
	m := f.withMetrics()
	f.clock.Step(time.Hour) // long after the last scale: the window is open
	f.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: 1, Replicas: 1, Scaled: false}

	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	f.watcher.states[webID] = scaling.TargetState{Exists: true, Current: true, Replicas: 1, ReadyReplicas: 1}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	writes := f.statusWrites()
	if len(writes) != 1 {
		t.Fatalf("want one status write, got %d (phases %v)", len(writes), phases(writes))
	}
	status := writes[0].Status
	if status.Phase != v1alpha1.PhaseReady || status.ObservedGeneration != 2 || status.ColdStartDuration != nil {
		t.Fatalf("status: phase %s generation %d cold start %v", status.Phase, status.ObservedGeneration, status.ColdStartDuration)
	}
	if n := testutil.CollectAndCount(m.wakeToReady); n != 1 {
		t.Fatalf("histogram series %d", n)
	}
	if got := histogramCount(t, m.wakeToReady); got != 0 {
		t.Fatalf("a target that was already up was recorded as a cold start (%d observations)", got)
	}
}

func phases(writes []*v1alpha1.ScaleRequest) []v1alpha1.ScaleRequestPhase {
	var out []v1alpha1.ScaleRequestPhase
	for _, w := range writes {
		out = append(out, w.Status.Phase)
	}
	return out
}

func histogramCount(t *testing.T, h prometheus.Histogram) uint64 {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// A fight (something keeps setting the target below the minimum) ends: each re-scale does not
// move the deadline, which runs from the first scale of the signal.
func TestFightEndsAfterTheReadyTimeout(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, scaledRequest(t0))
	f.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: 0, Replicas: 1, Scaled: true}
	rescales := 0
	for step := 0; step < 20; step++ {
		f.clock.Step(window)
		f.watcher.states[webID] = scaling.TargetState{Exists: true, Current: true, Replicas: 0}
		if err := f.sync(); err != nil {
			t.Fatal(err)
		}
		rescales = len(f.scaler.calls)
		writes := f.statusWrites()
		if len(writes) > 0 {
			f.applyLastWrite()
			if last := writes[len(writes)-1]; last.Status.Phase == v1alpha1.PhaseFailed {
				expectCondition(t, last.Status, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonReadyTimeout)
				elapsed := f.clock.Now().Sub(t0)
				if elapsed < readyTimeout || elapsed > readyTimeout+window {
					t.Fatalf("fight ended %s after the first scale; want between the ready timeout %s and one window later", elapsed, readyTimeout)
				}
				if !settled(last) {
					t.Fatal("a lost fight must wait for a new signal")
				}
				return
			}
		}
	}
	t.Fatalf("the fight went on for %s with %d re-scales", f.clock.Now().Sub(t0), rescales)
}

// gatedScaler's first ScaleUp waits until released, as a slow API server would; later ones
// answer at once, so that a second write is counted rather than blocked.
type gatedScaler struct {
	*fakeScaler
	entered chan struct{}
	release chan struct{}
	first   sync.Once
}

func (s *gatedScaler) ScaleUp(ctx context.Context, target scaling.Target, minReplicas int32) (scaling.Result, error) {
	s.first.Do(func() {
		s.entered <- struct{}{}
		<-s.release
	})
	return s.fakeScaler.ScaleUp(ctx, target, minReplicas)
}

// Two requests naming one target, served by two workers at once, make one scale write.
func TestTwoRequestsOneTargetOneWrite(t *testing.T) {
	other := newRequest("Deployment")
	other.Name = "web-too"
	f := newFixture(t, DefaultAllowedKinds, newRequest("Deployment"), other)
	slow := &gatedScaler{fakeScaler: f.scaler, entered: make(chan struct{}, 2), release: make(chan struct{})}
	f.ctrl.scaler = slow
	f.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: 0, Replicas: 1, Scaled: true}
	f.scaler.current = scaling.Result{Resource: deployments, PreviousReplicas: 1, Replicas: 1}

	var wg sync.WaitGroup
	wg.Go(func() {
		if err := f.ctrl.sync(f.ctx, cache.ObjectName{Namespace: "shop", Name: "web"}); err != nil {
			t.Error(err)
		}
	})
	<-slow.entered // the first worker's write is under way
	if err := f.ctrl.sync(f.ctx, cache.ObjectName{Namespace: "shop", Name: "web-too"}); err != nil {
		t.Fatal(err)
	}
	close(slow.release)
	wg.Wait()
	// The second request was queued again when the write ended; it now finds the target up.
	if err := f.ctrl.sync(f.ctx, cache.ObjectName{Namespace: "shop", Name: "web-too"}); err != nil {
		t.Fatal(err)
	}
	if n := len(f.scaler.calls); n != 1 {
		t.Fatalf("two requests for one target made %d scale writes in one window", n)
	}
	if f.ctrl.queue.Len() == 0 {
		t.Fatal("the waiting request was not queued again when the write ended")
	}
}

// Each outcome counts once per signal, however many syncs it takes.
func TestScaleOutcomesCountOncePerSignal(t *testing.T) {
	sr := scaledRequest(t0.Add(-10 * time.Second))
	sr.Generation = 2
	f := newFixture(t, DefaultAllowedKinds, sr)
	m := f.withMetrics()
	for range 5 { // syncs inside the window: target events, re-checks
		if err := f.sync(); err != nil {
			t.Fatal(err)
		}
		if len(f.statusWrites()) > 0 {
			f.applyLastWrite()
		}
		f.clock.Step(time.Second)
	}
	if got := testutil.ToFloat64(m.scales.WithLabelValues(v1alpha1.ReasonRescaleWindow)); got != 1 {
		t.Fatalf("RescaleWindow counted %v times for one signal", got)
	}

	f2 := newFixture(t, DefaultAllowedKinds, newRequest("Deployment"))
	m2 := f2.withMetrics()
	f2.scaler.err = &scaling.Error{Reason: scaling.ReasonTargetNotFound, Err: errors.New("not found")}
	for range 3 {
		if err := f2.sync(); err != nil {
			t.Fatal(err)
		}
		if len(f2.statusWrites()) > 0 {
			f2.applyLastWrite()
		}
	}
	if got := testutil.ToFloat64(m2.scales.WithLabelValues(v1alpha1.ReasonTargetNotFound)); got != 1 {
		t.Fatalf("TargetNotFound counted %v times for one signal", got)
	}
}

// A Ready request follows its target through the inventory: set back to zero, it is Idle (not
// Ready); ready again, it is Ready. No API call either way.
func TestReadyRequestFollowsItsTarget(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, readyRequest())
	f.inventory.set("web", scaling.InventoryEntry{State: scaling.TargetState{Exists: true, Current: true, Replicas: 0}})
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	status := f.lastStatus()
	if status.Phase != v1alpha1.PhaseIdle {
		t.Fatalf("a Ready request whose target is at zero reads %s", status.Phase)
	}
	expectCondition(t, status, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonTargetScaledDown)
	if len(f.scaler.calls) != 0 || len(f.scaler.reads) != 0 {
		t.Fatalf("following a settled request cost API calls: %d scales, %d reads", len(f.scaler.calls), len(f.scaler.reads))
	}
	f.expectEvents("Normal TargetScaledDown Deployment/web was set to 0 replicas after it was ready")
	f.applyLastWrite()

	f.inventory.set("web", scaling.InventoryEntry{State: scaling.TargetState{Exists: true, Current: true, Replicas: 2, ReadyReplicas: 2}})
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	status = f.lastStatus()
	if status.Phase != v1alpha1.PhaseReady {
		t.Fatalf("phase %s after the target came back", status.Phase)
	}
}

// The inventory's notification reaches Ready requests, and not active ones (their own watch
// reports to them).
func TestTargetChangeReachesSettledRequests(t *testing.T) {
	active := scaledRequest(t0)
	active.Name = "web-active"
	f := newFixture(t, DefaultAllowedKinds, readyRequest(), active)
	f.ctrl.OnTargetChange(schema.GroupKind{Group: "apps", Kind: "Deployment"}, "shop", "web")
	if f.ctrl.queue.Len() != 1 {
		t.Fatalf("queued %d requests, want the Ready one", f.ctrl.queue.Len())
	}
	if key, _ := f.ctrl.queue.Get(); key.Name != "web" {
		t.Fatalf("queued %v", key)
	}
}

// With opt-in required, an unmarked target is refused with a reason that says how to opt in,
// and nothing is scaled; marking it serves the request; a cap is enforced.
func TestOwnerOptIn(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, newRequest("Deployment"))
	f.ctrl.config.RequireOptIn = true
	f.scaler.current = scaling.Result{Resource: deployments}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	status := f.lastStatus()
	expectCondition(t, status, v1alpha1.ConditionScaled, metav1.ConditionFalse, v1alpha1.ReasonNotOptedIn)
	if len(f.scaler.calls) != 0 {
		t.Fatal("scaled a target its owner did not mark")
	}
	f.expectEvents("Warning NotOptedIn Deployment/web has not opted in to being woken by ScaleRequests; its owner can allow it with: kubectl label deployments.apps web -n shop zerowake.dev/wake=true")
	f.applyLastWrite()

	f.inventory.set("web", scaling.InventoryEntry{State: scaling.TargetState{Exists: true, Current: true},
		Annotations: map[string]string{v1alpha1.AnnotationMaxReplicas: "0"}})
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	expectCondition(t, f.lastStatus(), v1alpha1.ConditionScaled, metav1.ConditionFalse, v1alpha1.ReasonAboveOwnerCap)
	f.applyLastWrite()

	f.inventory.set("web", scaling.InventoryEntry{State: scaling.TargetState{Exists: true, Current: true},
		Annotations: map[string]string{v1alpha1.AnnotationMaxReplicas: "1"}})
	f.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: 0, Replicas: 1, Scaled: true}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	expectCondition(t, f.lastStatus(), v1alpha1.ConditionScaled, metav1.ConditionTrue, v1alpha1.ReasonScaledFromZero)
}

func TestAllowedKindsRefusesAVersion(t *testing.T) {
	for _, bad := range []string{"Deployment.v1.apps", "Rollout.v1alpha1.argoproj.io", "Deployment.apps/v1"} {
		_, err := ParseAllowedKinds(bad)
		if err == nil {
			t.Fatalf("%q accepted; it would never match", bad)
		}
		t.Logf("%s: %v", bad, err)
	}
	if _, err := ParseAllowedKinds("Deployment.v1.apps"); err == nil || !strings.Contains(err.Error(), "Deployment.apps") {
		t.Fatalf("the message does not show the expected form: %v", err)
	}
}

// A request that fails while it holds a target watch (its target deleted and so gone from the
// inventory, its mark removed) lets the watch go.
func TestFailureReleasesTheTargetWatch(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, scaledRequest(t0))
	f.ctrl.config.RequireOptIn = true
	f.ctrl.hold(cache.ObjectName{Namespace: "shop", Name: "web"}, webID)
	f.watcher.watched[webID] = true
	f.scaler.err = &scaling.Error{Reason: scaling.ReasonTargetNotFound, Err: errors.New("not found")}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	expectCondition(t, f.lastStatus(), v1alpha1.ConditionScaled, metav1.ConditionFalse, v1alpha1.ReasonTargetNotFound)
	if f.ctrl.Active() != 0 || f.watcher.watched[webID] {
		t.Fatalf("a failed request kept its target watch: active=%d", f.ctrl.Active())
	}
}
