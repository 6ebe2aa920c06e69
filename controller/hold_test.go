package controller

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/scaling"
)

// steadyArrivals drives shop/web through a burst in which a new signal arrives every tick, so
// that some other request's first scale is always still to come: web is scaled at t0 while
// another target wakes, its target turns ready at readyAt, and the test steps the fake clock
// until web's Ready status is written (or until limit). It returns that write and when it was
// made.
func steadyArrivals(t *testing.T, f *fixture, readyAt, limit time.Duration) (*v1alpha1.ScaleRequest, time.Duration) {
	t.Helper()
	web := cache.ObjectName{Namespace: "shop", Name: "web"}
	f.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: 0, Replicas: 1, Scaled: true}
	// Another target is waking, so web's Scaled status write is held (scale first).
	f.ctrl.hold(cache.ObjectName{Namespace: "shop", Name: "waking"}, "shop/apps/Deployment/waking")
	arrival := func(i int) cache.ObjectName {
		return cache.ObjectName{Namespace: "shop", Name: fmt.Sprintf("new-%d", i)}
	}
	f.ctrl.scaleFirst.expect(arrival(0))
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if n := len(f.statusWrites()); n != 0 {
		t.Fatalf("%d status writes while another target wakes, want 0 (held)", n)
	}

	const tick = 100 * time.Millisecond
	for i := 1; time.Duration(i)*tick <= limit; i++ {
		// The next signal arrives before the previous one's first scale is attempted: there is
		// always one still to come.
		f.ctrl.scaleFirst.expect(arrival(i))
		for _, released := range f.ctrl.scaleFirst.attempted(arrival(i - 1)) {
			f.ctrl.queue.Add(released)
		}
		f.clock.Step(tick)
		now := time.Duration(i) * tick
		if now == readyAt {
			f.watcher.states[webID] = scaling.TargetState{Exists: true, Current: true, Replicas: 1, ReadyReplicas: 1}
			f.ctrl.queue.Add(web) // the target's event
		}
		// The delaying queue moves items due at the new time on a goroutine of its own.
		waitForQueue(f.ctrl, 5*time.Millisecond)
		for f.ctrl.queue.Len() > 0 {
			key, _ := f.ctrl.queue.Get()
			if key == web {
				if err := f.sync(); err != nil {
					t.Fatal(err)
				}
			}
			f.ctrl.queue.Done(key)
		}
		for _, w := range f.statusWrites() {
			if w.Status.Phase == v1alpha1.PhaseReady {
				return w, now
			}
		}
	}
	return nil, 0
}

// TestReadyWriteBoundedUnderSteadyArrivals: while new signals keep arriving, a target that is
// ready gets its Ready status within readyHoldLimit of the controller seeing it ready, rather
// than at the end of its rescale window (the gate's default route timeout).
func TestReadyWriteBoundedUnderSteadyArrivals(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, newRequest("Deployment"))
	readyAt := time.Second
	written, at := steadyArrivals(t, f, readyAt, window+time.Second)
	if written == nil {
		t.Fatalf("no Ready status written within the %s window of steady arrivals", window)
	}
	if delay := at - readyAt; delay > readyHoldLimit {
		t.Fatalf("Ready written %s after readiness was seen under steady arrivals, want at most %s (the held write's bound, readyHoldLimit)", delay, readyHoldLimit)
	}
	expectCondition(t, written.Status, v1alpha1.ConditionScaled, metav1.ConditionTrue, v1alpha1.ReasonScaledFromZero)
}

// TestColdStartEndsWhenReadinessIsSeen: a held Ready write stamps readyTime and the cold start at
// the moment the controller saw the target ready, not when the write went out.
func TestColdStartEndsWhenReadinessIsSeen(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, newRequest("Deployment"))
	readyAt := 1100 * time.Millisecond
	written, at := steadyArrivals(t, f, readyAt, window+time.Second)
	if written == nil {
		t.Fatal("no Ready status written")
	}
	if got, want := written.Status.ReadyTime.Time, t0.Add(readyAt); !got.Equal(want) {
		t.Errorf("readyTime %s (the write at +%s), want %s (readiness seen at +%s)", got.Format(time.StampMilli), at, want.Format(time.StampMilli), readyAt)
	}
	// The request was created 100ms before t0.
	if got, want := written.Status.ColdStartDuration.Duration, readyAt+100*time.Millisecond; got != want {
		t.Errorf("coldStartDuration %s, want %s (signal to readiness seen)", got, want)
	}
}

// TestColdStartBoundedByControllerObservation: the cold start is measured from the resolver's
// requestedAt only within what the controller itself observed: a signal can be no later than
// the controller first seeing it, and no earlier than signalAllowance before that.
func TestColdStartBoundedByControllerObservation(t *testing.T) {
	for _, tc := range []struct {
		name        string
		requestedAt time.Time
		want        time.Duration
	}{
		{"in the future", t0.Add(time.Hour), time.Second},
		{"months ago", t0.Add(-90 * 24 * time.Hour), time.Second + signalAllowance},
		{"plausible", t0.Add(-300 * time.Millisecond), 1300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sr := newRequest("Deployment")
			sr.Spec.RequestedAt = &metav1.MicroTime{Time: tc.requestedAt}
			f := newFixture(t, DefaultAllowedKinds)
			f.ctrl.onAdd(sr) // the controller first sees the signal at t0
			if err := f.put(sr); err != nil {
				t.Fatal(err)
			}
			f.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: 0, Replicas: 1, Scaled: true}
			if err := f.sync(); err != nil {
				t.Fatal(err)
			}
			f.client.ClearActions()
			f.clock.Step(time.Second)
			f.watcher.states[webID] = scaling.TargetState{Exists: true, Current: true, Replicas: 1, ReadyReplicas: 1}
			if err := f.sync(); err != nil {
				t.Fatal(err)
			}
			status := f.lastStatus()
			expectCondition(t, status, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonTargetReady)
			if got := status.ColdStartDuration; got == nil || got.Duration != tc.want {
				t.Fatalf("coldStartDuration %v for requestedAt %s, want %s", got, tc.requestedAt.Format(time.RFC3339), tc.want)
			}
		})
	}
}
