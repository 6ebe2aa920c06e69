package controller

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/scaling"
)

// earlierSignal makes sr's generation 2, its generation 1 recorded as scaled from zero at t0-1h
// and now in phase.
func earlierSignal(sr *v1alpha1.ScaleRequest, phase v1alpha1.ScaleRequestPhase) {
	sr.Generation = 2
	sr.Status.Phase = phase
	sr.Status.ObservedGeneration = 1
	sr.Status.LastScaleTime = &metav1.Time{Time: t0.Add(-time.Hour)}
	sr.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionScaled, Status: metav1.ConditionTrue,
		Reason: v1alpha1.ReasonScaledFromZero, ObservedGeneration: 1, LastTransitionTime: metav1.Time{Time: t0.Add(-time.Hour)}}}
}

// TestUnrecordedWriteIsRecorded: a request not Scaled for its signal, whose target is up
// because this controller's from-zero write raised it and a restart lost the status write, is
// recorded as that write: ScaledFromZero from 0, with a window. Records an earlier write
// accounts for (this request's earlier signal or another request, the target not seen down
// since), writes from before the signal and raises from a count above zero are not:
// AlreadyScaled.
func TestUnrecordedWriteIsRecorded(t *testing.T) {
	upAlready := scaling.Result{Resource: deployments, PreviousReplicas: 1, Replicas: 1}
	fromZero := scaling.Write{FromZero: true} // Kubernetes v1.37 keeps no time for /scale writes
	for _, tc := range []struct {
		name    string
		write   scaling.Write
		prepare func(f *fixture, sr *v1alpha1.ScaleRequest)
		reason  string
	}{
		{"from zero, no time kept", fromZero, nil, v1alpha1.ReasonScaledFromZero},
		{"from zero in the signal's second", scaling.Write{At: t0.Add(-100 * time.Millisecond).Truncate(time.Second), FromZero: true}, nil, v1alpha1.ReasonScaledFromZero},
		{"from zero before the signal", scaling.Write{At: t0.Add(-time.Hour), FromZero: true}, nil, v1alpha1.ReasonAlreadyScaled},
		{"an earlier signal's, target up since", fromZero, func(_ *fixture, sr *v1alpha1.ScaleRequest) { earlierSignal(sr, v1alpha1.PhaseReady) }, v1alpha1.ReasonAlreadyScaled},
		{"after an earlier signal went idle", fromZero, func(_ *fixture, sr *v1alpha1.ScaleRequest) { earlierSignal(sr, v1alpha1.PhaseIdle) }, v1alpha1.ReasonScaledFromZero},
		{"another request's", fromZero, func(f *fixture, _ *v1alpha1.ScaleRequest) {
			other := newRequest("Deployment")
			other.Name, other.UID = "other", types.UID("other")
			earlierSignal(other, v1alpha1.PhaseReady)
			other.Generation, other.Status.ObservedGeneration = 1, 1
			if err := f.put(other); err != nil {
				t.Fatal(err)
			}
		}, v1alpha1.ReasonAlreadyScaled},
		{"a raise", scaling.Write{FromZero: false}, nil, v1alpha1.ReasonAlreadyScaled},
		{"none", scaling.Write{}, nil, v1alpha1.ReasonAlreadyScaled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sr := newRequest("Deployment")
			sr.UID = "web"
			f := newFixture(t, DefaultAllowedKinds)
			if tc.prepare != nil {
				tc.prepare(f, sr)
			}
			if err := f.put(sr); err != nil {
				t.Fatal(err)
			}
			f.scaler.result = upAlready
			f.scaler.lastWrite = tc.write
			f.scaler.lastWriteFound = tc.name != "none"
			// The target's cache lists it up (not ready yet), so status is written at once.
			f.watcher.states[webID] = scaling.TargetState{Exists: true, Current: true, Replicas: 1}
			if err := f.sync(); err != nil {
				t.Fatal(err)
			}
			status := f.lastStatus()
			expectCondition(t, status, v1alpha1.ConditionScaled, metav1.ConditionTrue, tc.reason)
			if tc.reason != v1alpha1.ReasonScaledFromZero {
				return
			}
			if status.PreviousReplicas == nil || *status.PreviousReplicas != 0 {
				t.Fatalf("previousReplicas %v, want 0", status.PreviousReplicas)
			}
			wantLast, windowFrom := tc.write.At, tc.write.At
			if wantLast.IsZero() {
				windowFrom = t0 // the moment it was found: never shorter than a window
			}
			if got := status.LastScaleTime; (got == nil) != wantLast.IsZero() || (got != nil && !got.Time.Equal(wantLast)) {
				t.Fatalf("lastScaleTime %v, want %v (the write's time if the API server kept it, else none)", got, wantLast)
			}
			if res := f.ctrl.window.reserve(webID, time.Time{}, t0); res.wait != windowFrom.Add(window).Sub(t0) {
				t.Fatalf("window after the recorded write: %+v, want a wait until one window after %s", res, windowFrom)
			}
		})
	}
}

// TestUnrecordedWriteCostsNothingNormally: a from-zero wake never reads the target's record.
func TestUnrecordedWriteCostsNothingNormally(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, newRequest("Deployment"))
	f.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: 0, Replicas: 1, Scaled: true}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if f.scaler.lastWriteReads != 0 {
		t.Fatalf("%d reads of the target's write record on a from-zero wake, want 0", f.scaler.lastWriteReads)
	}
}
