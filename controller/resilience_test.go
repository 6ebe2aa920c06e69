package controller

import (
	"context"
	"errors"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/scaling"
)

// TestServedRequestIsFollowedByASuccessor: a request scaled by a predecessor (which crashed or
// lost the lease before the target was ready) is still followed here: the target is watched, so
// readiness arrives, and it is not scaled again.
func TestServedRequestIsFollowedByASuccessor(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, scaledRequest(t0.Add(-time.Second)))
	f.scaler.current = scaling.Result{Resource: deployments, PreviousReplicas: 1, Replicas: 1}

	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if len(f.scaler.calls) != 0 {
		t.Fatalf("a served request was scaled again: %+v", f.scaler.calls)
	}
	if !f.watcher.watched[webID] || f.ctrl.Active() != 1 {
		t.Fatalf("target of a served request not watched: watched=%v active=%d", f.watcher.watched, f.ctrl.Active())
	}

	// The watch reports the target ready.
	f.watcher.states[webID] = scaling.TargetState{Exists: true, Current: true, Replicas: 1, ReadyReplicas: 1}
	f.client.ClearActions()
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if status := f.lastStatus(); status.Phase != v1alpha1.PhaseReady {
		t.Fatalf("status: %+v", status)
	}
	if len(f.scaler.reads) != 1 {
		t.Fatalf("want one read to resolve the target, got %d", len(f.scaler.reads))
	}
}

// TestServedRequestWhoseTargetIsGoneFails: a successor finding the target of a served request
// gone reports it instead of waiting for readiness that cannot come.
func TestServedRequestWhoseTargetIsGoneFails(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, scaledRequest(t0.Add(-time.Second)))
	f.scaler.err = &scaling.Error{Reason: scaling.ReasonTargetNotFound, Err: errors.New("not found")}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	status := f.lastStatus()
	expectCondition(t, status, v1alpha1.ConditionScaled, metav1.ConditionFalse, v1alpha1.ReasonTargetNotFound)
	if status.Phase != v1alpha1.PhaseFailed || meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionReady) != nil {
		t.Fatalf("status: %+v", status)
	}
}

// slowScaler is a fakeScaler whose writes take time on the fake clock, as they do on a busy
// API server.
type slowScaler struct {
	*fakeScaler
	clock   interface{ Step(time.Duration) }
	latency time.Duration
}

func (s *slowScaler) ScaleUp(ctx context.Context, target scaling.Target, minReplicas int32) (scaling.Result, error) {
	s.clock.Step(s.latency)
	return s.fakeScaler.ScaleUp(ctx, target, minReplicas)
}

// TestRescaleWindowRunsFromTheWrite: the rescale window starts when a write is answered, not
// when the sync that made it began, so a slow write does not bring the next one closer.
func TestRescaleWindowRunsFromTheWrite(t *testing.T) {
	const latency = 700 * time.Millisecond
	// Scaled long ago; something set the target back to 0 since: a fight.
	f := newFixture(t, DefaultAllowedKinds, scaledRequest(t0.Add(-2*window)))
	f.ctrl.scaler = &slowScaler{fakeScaler: f.scaler, clock: f.clock, latency: latency}
	f.watcher.states[webID] = scaling.TargetState{Exists: true, Current: true, Replicas: 0}
	f.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: 0, Replicas: 1, Scaled: true}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	written := f.statusWrites()[0]
	if got := written.Status.LastScaleTime.Time; !got.Equal(t0.Add(latency)) {
		t.Fatalf("lastScaleTime %v, want the write's answer at %v", got, t0.Add(latency))
	}
	if err := f.put(written); err != nil {
		t.Fatal(err)
	}
	f.events()
	f.client.ClearActions()

	// Reverted again; one window after the sync began, but not after the write was answered.
	f.clock.Step(window - latency/2)
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if len(f.scaler.calls) != 1 {
		t.Fatalf("rescaled %s after the last write, inside the %s window", window-latency/2, window)
	}
	expectCondition(t, f.lastStatus(), v1alpha1.ConditionScaled, metav1.ConditionFalse, v1alpha1.ReasonScaleFight)
}

// blockingScaler is a fakeScaler whose ScaleUp waits until released.
type blockingScaler struct {
	*fakeScaler
	started chan string
	release chan struct{}
}

func (s *blockingScaler) ScaleUp(ctx context.Context, target scaling.Target, minReplicas int32) (scaling.Result, error) {
	s.started <- target.Ref.Name
	<-s.release
	return s.fakeScaler.ScaleUp(ctx, target, minReplicas)
}

// TestStopFinishesOnlyWorkInFlight: on stop (SIGTERM, or before releasing the lease) the sync
// under way finishes its writes, and queued keys are left for the successor, so that the lease
// is released as soon as that one write is done.
func TestStopFinishesOnlyWorkInFlight(t *testing.T) {
	var requests []*v1alpha1.ScaleRequest
	for _, name := range []string{"web", "api", "db"} {
		sr := newRequest("Deployment")
		sr.Name, sr.Spec.ScaleTargetRef.Name = name, name
		requests = append(requests, sr)
	}
	f := newFixture(t, DefaultAllowedKinds, requests...)
	f.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: 0, Replicas: 1, Scaled: true}
	scaler := &blockingScaler{fakeScaler: f.scaler, started: make(chan string, len(requests)), release: make(chan struct{})}
	f.ctrl.scaler = scaler
	for ns, src := range f.ctrl.sources {
		src.synced = func() bool { return true }
		f.ctrl.sources[ns] = src
	}
	for _, sr := range requests {
		f.ctrl.queue.Add(cache.ObjectName{Namespace: sr.Namespace, Name: sr.Name})
	}

	ctx, stop := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() { done <- f.ctrl.Run(ctx, 1) }()
	inFlight := <-scaler.started
	stop()
	close(scaler.release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after stop")
	}
	if len(f.scaler.calls) != 1 {
		t.Fatalf("stopping worked through the queue: %d scale calls, want only the one in flight (%s)", len(f.scaler.calls), inFlight)
	}
	if writes := f.statusWrites(); len(writes) != 1 || writes[0].Name != inFlight {
		t.Fatalf("the sync in flight did not finish its status write: %d writes", len(writes))
	}
}

// TestDeferredScaleWritesStatusOnce: while a scale waits out the rescale window, syncs caused
// by the target's events (pods coming and going) find the status already right and write
// nothing.
func TestDeferredScaleWritesStatusOnce(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, scaledRequest(t0.Add(-5*time.Second)))
	f.watcher.states[webID] = scaling.TargetState{Exists: true, Current: true, Replicas: 0}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	written := f.statusWrites()
	if len(written) != 1 {
		t.Fatalf("want one status write for the deferred fight, got %d", len(written))
	}
	expectCondition(t, written[0].Status, v1alpha1.ConditionScaled, metav1.ConditionFalse, v1alpha1.ReasonScaleFight)
	if err := f.put(written[0]); err != nil {
		t.Fatal(err)
	}
	f.client.ClearActions()
	for range 3 {
		f.clock.Step(time.Second)
		f.watcher.states[webID] = scaling.TargetState{Exists: true, Current: false, Replicas: 0}
		if err := f.sync(); err != nil {
			t.Fatal(err)
		}
		if n := len(f.statusWrites()); n != 0 {
			t.Fatalf("status rewritten %d times inside the same window: %+v", n, f.statusWrites()[0].Status.Conditions)
		}
	}
}

// TestForeignReadyIsNotTrusted: a status that says Ready for the current signal on a request
// that is not settled (written by someone else: the schema admits it) is not carried over; here
// the scale waits out the rescale window, and the request must read Pending, not Ready.
func TestForeignReadyIsNotTrusted(t *testing.T) {
	sr := newRequest("Deployment")
	sr.Status = v1alpha1.ScaleRequestStatus{
		ObservedGeneration: 1, Phase: v1alpha1.PhasePending,
		LastScaleTime: &metav1.Time{Time: t0.Add(-time.Second)},
		Conditions: []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue,
			Reason: v1alpha1.ReasonTargetReady, ObservedGeneration: 1, LastTransitionTime: metav1.Time{Time: t0.Add(-time.Minute)}}},
	}
	f := newFixture(t, DefaultAllowedKinds, sr)
	f.scaler.current = scaling.Result{Resource: deployments, Replicas: 0}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	status := f.lastStatus()
	if status.Phase != v1alpha1.PhasePending || meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionReady) != nil {
		t.Fatalf("status: %+v", status)
	}
	expectCondition(t, status, v1alpha1.ConditionScaled, metav1.ConditionFalse, v1alpha1.ReasonRescaleWindow)
}

// TestScaleFirst: while other requests wait in the queue, a pass that scaled a target holds its
// status write; once the queue is idle, the pass that comes back for it writes the outcome it
// kept (ScaledFromZero, not AlreadyScaled) and scales nothing again.
func TestScaleFirst(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, newRequest("Deployment"))
	f.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: 0, Replicas: 1, Scaled: true}
	waiting := cache.ObjectName{Namespace: "shop", Name: "other"}
	f.ctrl.queue.Add(waiting)
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if len(f.scaler.calls) != 1 || len(f.statusWrites()) != 0 {
		t.Fatalf("with work queued: %d scale writes and %d status writes, want 1 and 0", len(f.scaler.calls), len(f.statusWrites()))
	}
	if next, _ := f.ctrl.queue.Get(); next != waiting || f.ctrl.queue.Len() != 0 {
		t.Fatalf("the queue serves %v first and holds %d more, want only the request waiting to be scaled", next, f.ctrl.queue.Len())
	} else {
		f.ctrl.queue.Done(next)
	}

	// Nothing else waits now: the status write goes out.
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if len(f.scaler.calls) != 1 {
		t.Fatalf("scaled again: %d scale writes", len(f.scaler.calls))
	}
	if writes := f.statusWrites(); len(writes) != 1 {
		t.Fatalf("%d status writes, want 1", len(writes))
	}
	expectCondition(t, f.lastStatus(), v1alpha1.ConditionScaled, metav1.ConditionTrue, v1alpha1.ReasonScaledFromZero)
	f.expectEvents("Normal ScaledFromZero Scaled Deployment/web from 0 to 1 replicas")
}

// TestScaleFirstReadyInOneWrite: a held status write whose target becomes ready meanwhile says
// both in one write; both events are still posted.
func TestScaleFirstReadyInOneWrite(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, newRequest("Deployment"))
	f.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: 0, Replicas: 1, Scaled: true}
	f.ctrl.queue.Add(cache.ObjectName{Namespace: "shop", Name: "other"})
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	f.watcher.states[webID] = scaling.TargetState{Exists: true, Current: true, Replicas: 1, ReadyReplicas: 1}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	writes := f.statusWrites()
	if len(writes) != 1 || writes[0].Status.Phase != v1alpha1.PhaseReady {
		t.Fatalf("%d status writes (last phase %v), want one saying Ready", len(writes), f.lastStatus().Phase)
	}
	expectCondition(t, f.lastStatus(), v1alpha1.ConditionScaled, metav1.ConditionTrue, v1alpha1.ReasonScaledFromZero)
	f.expectEvents("Normal ScaledFromZero Scaled Deployment/web from 0 to 1 replicas", "Normal TargetReady Deployment/web has 1/1 ready replicas")
}

// TestScaleFirstWhileOthersWake: a status write also waits while other targets are waking, and
// goes out once this wake is the only one.
func TestScaleFirstWhileOthersWake(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, newRequest("Deployment"))
	f.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: 0, Replicas: 1, Scaled: true}
	other := cache.ObjectName{Namespace: "shop", Name: "other"}
	f.ctrl.hold(other, "shop/apps/Deployment/other")
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if n := len(f.statusWrites()); n != 0 {
		t.Fatalf("%d status writes while another target wakes, want 0", n)
	}
	f.ctrl.release(other)
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if n, calls := len(f.statusWrites()), len(f.scaler.calls); n != 1 || calls != 1 {
		t.Fatalf("%d status writes and %d scale writes once alone, want 1 and 1", n, calls)
	}
}

// TestReadinessWaitsForOthersFirstScale: a request whose target is ready holds that status write
// while another request still waits for its scale write (a resolver waits on that one, on none
// of the status writes), and the other's scale attempt sends it back to the queue.
func TestReadinessWaitsForOthersFirstScale(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, newRequest("Deployment"))
	f.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: 0, Replicas: 1, Scaled: true}
	web := cache.ObjectName{Namespace: "shop", Name: "web"}
	other := cache.ObjectName{Namespace: "shop", Name: "other"}
	f.ctrl.scaleFirst.expect(other)
	f.ctrl.queue.Add(other)
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	f.watcher.states[webID] = scaling.TargetState{Exists: true, Current: true, Replicas: 1, ReadyReplicas: 1}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if n := len(f.statusWrites()); n != 0 {
		t.Fatalf("%d status writes while another request waits for its scale write, want 0", n)
	}
	if pending, held := f.ctrl.scaleFirst.counts(); pending != 1 || held != 1 {
		t.Fatalf("%d pending and %d held, want 1 and 1", pending, held)
	}

	// The other request is looked at (it no longer exists in this fixture's cache: gone counts
	// as attempted); that releases web's write.
	next, _ := f.ctrl.queue.Get()
	if next != other {
		t.Fatalf("the queue serves %v, want %v", next, other)
	}
	if err := f.ctrl.sync(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	f.ctrl.queue.Done(other)
	if f.ctrl.queue.Len() != 1 {
		t.Fatalf("the queue holds %d after the last first scale, want the held %v", f.ctrl.queue.Len(), web)
	}
	if next, _ := f.ctrl.queue.Get(); next != web {
		t.Fatalf("the queue serves %v after the last first scale, want the held %v", next, web)
	} else {
		f.ctrl.queue.Done(next)
	}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	writes := f.statusWrites()
	if len(writes) != 1 || writes[0].Status.Phase != v1alpha1.PhaseReady {
		t.Fatalf("%d status writes (last phase %v), want one saying Ready", len(writes), f.lastStatus().Phase)
	}
	expectCondition(t, f.lastStatus(), v1alpha1.ConditionScaled, metav1.ConditionTrue, v1alpha1.ReasonScaledFromZero)
	if len(f.scaler.calls) != 1 {
		t.Fatalf("%d scale writes, want 1", len(f.scaler.calls))
	}
}

// TestHeldStatusWrittenAtShutdown: a status write held for a burst is made when the controller
// stops, so that a successor finds the scale write recorded rather than a target already up.
func TestHeldStatusWrittenAtShutdown(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, newRequest("Deployment"))
	f.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: 0, Replicas: 1, Scaled: true}
	f.ctrl.queue.Add(cache.ObjectName{Namespace: "shop", Name: "other"})
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if n := len(f.statusWrites()); n != 0 {
		t.Fatalf("%d status writes with work queued, want 0", n)
	}
	f.ctrl.queue.ShutDown()
	f.ctrl.writeHeldStatus(context.Background(), 4)
	if n, calls := len(f.statusWrites()), len(f.scaler.calls); n != 1 || calls != 1 {
		t.Fatalf("%d status writes and %d scale writes at shutdown, want 1 and 1", n, calls)
	}
	expectCondition(t, f.lastStatus(), v1alpha1.ConditionScaled, metav1.ConditionTrue, v1alpha1.ReasonScaledFromZero)
}

// TestFailingScaleHoldsNoOne: a request whose scale attempt fails and is retried no longer
// holds other requests' readiness, or one broken target would delay every Ready by a window.
func TestFailingScaleHoldsNoOne(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, newRequest("Deployment"))
	f.scaler.err = errors.New("connection reset by peer")
	web := cache.ObjectName{Namespace: "shop", Name: "web"}
	ready := cache.ObjectName{Namespace: "shop", Name: "ready"}
	f.ctrl.scaleFirst.expect(web)
	if !f.ctrl.scaleFirst.hold(ready) {
		t.Fatal("readiness not held while web's scale write is to come")
	}
	if err := f.sync(); err == nil {
		t.Fatal("a transient scale failure returned no error to retry on")
	}
	if pending, held := f.ctrl.scaleFirst.counts(); pending != 0 || held != 0 {
		t.Fatalf("%d pending and %d held after web's failed attempt, want none", pending, held)
	}
	if f.ctrl.queue.Len() != 1 {
		t.Fatalf("the queue holds %d, want the released request", f.ctrl.queue.Len())
	}
	if next, _ := f.ctrl.queue.Get(); next != ready {
		t.Fatalf("the queue serves %v, want the released %v", next, ready)
	}
}
