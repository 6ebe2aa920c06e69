package controller

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/scaling"
)

// The CRD's validation of spec.scaleTargetRef (see the XValidation rules in types.go).
var (
	admittedAPIVersion = regexp.MustCompile(`^(([a-z0-9]([-a-z0-9]*[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?v[1-9][0-9]*((alpha|beta)[1-9][0-9]*)?$`)
	admittedKind       = regexp.MustCompile(`^[A-Z][A-Za-z0-9]*$`)
	admittedName       = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	conditionReason    = regexp.MustCompile(`^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`)
)

// admitted reports whether the API server would store sr: the CRD's schema for spec, and for
// status (which anyone with rights to the status subresource may write) its phase enum and
// metav1.Condition's rules.
func admitted(sr *v1alpha1.ScaleRequest) bool {
	ref := sr.Spec.ScaleTargetRef
	switch {
	case len(ref.APIVersion) < 2 || len(ref.APIVersion) > 317 || !admittedAPIVersion.MatchString(ref.APIVersion),
		len(ref.Kind) < 1 || len(ref.Kind) > 63 || !admittedKind.MatchString(ref.Kind),
		len(ref.Name) < 1 || len(ref.Name) > 253 || !admittedName.MatchString(ref.Name),
		sr.Spec.MinReplicas < 1 || sr.Spec.MinReplicas > v1alpha1.MaxMinReplicas,
		sr.Status.ObservedGeneration < 0:
		return false
	}
	return validPhase(sr.Status.Phase) && len(metav1validation.ValidateConditions(sr.Status.Conditions, field.NewPath("status", "conditions"))) == 0
}

func validPhase(p v1alpha1.ScaleRequestPhase) bool {
	switch p {
	case v1alpha1.PhasePending, v1alpha1.PhaseScaling, v1alpha1.PhaseReady, v1alpha1.PhaseIdle, v1alpha1.PhaseFailed:
		return true
	}
	return false
}

// checkStatus fails unless status is one the API server admits and says what the controller
// means by it: a phase, valid conditions, the Scaled and Ready conditions about the current
// generation, and a phase that agrees with them.
func checkStatus(t *testing.T, sr *v1alpha1.ScaleRequest) {
	t.Helper()
	status := sr.Status
	if !validPhase(status.Phase) {
		t.Fatalf("phase %q is not in the enum; status %+v", status.Phase, status)
	}
	if errs := metav1validation.ValidateConditions(status.Conditions, field.NewPath("status", "conditions")); len(errs) > 0 {
		t.Fatalf("invalid conditions: %v; status %+v", errs.ToAggregate(), status)
	}
	if status.ObservedGeneration != sr.Generation {
		t.Fatalf("observedGeneration %d after a sync of generation %d", status.ObservedGeneration, sr.Generation)
	}
	scaled := meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionScaled)
	ready := meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionReady)
	for _, c := range []*metav1.Condition{scaled, ready} {
		if c == nil {
			continue
		}
		if c.ObservedGeneration != sr.Generation {
			t.Fatalf("%s condition is about generation %d, the request is at %d: %+v", c.Type, c.ObservedGeneration, sr.Generation, status)
		}
		if !conditionReason.MatchString(c.Reason) {
			t.Fatalf("%s condition reason %q", c.Type, c.Reason)
		}
	}
	if scaled == nil {
		t.Fatalf("no Scaled condition after a sync: %+v", status)
	}
	switch status.Phase {
	case v1alpha1.PhaseReady:
		if ready == nil || ready.Status != metav1.ConditionTrue || scaled.Status != metav1.ConditionTrue {
			t.Fatalf("Ready phase without Scaled and Ready true: %+v", status)
		}
		if status.ReadyTime == nil || (status.ColdStartDuration != nil && status.ColdStartDuration.Duration < 0) {
			t.Fatalf("Ready without a ready time, or with a negative cold start: %+v", status)
		}
		// A cold start is recorded exactly when this controller scaled the target up.
		switch scaledUp := scaled.Reason != v1alpha1.ReasonAlreadyScaled; {
		case scaledUp && status.ColdStartDuration == nil:
			t.Fatalf("Ready after a scale (%s) without a cold start: %+v", scaled.Reason, status)
		case !scaledUp && status.ColdStartDuration != nil:
			t.Fatalf("a cold start recorded for a target that was already up: %+v", status)
		}
	case v1alpha1.PhaseFailed:
		if !(scaled.Status == metav1.ConditionFalse && isFailure(scaled.Reason)) && !(ready != nil && ready.Reason == v1alpha1.ReasonReadyTimeout) {
			t.Fatalf("Failed phase without a failure reason: %+v", status)
		}
	case v1alpha1.PhaseScaling:
		if scaled.Status != metav1.ConditionTrue {
			t.Fatalf("Scaling phase without Scaled true: %+v", status)
		}
	}
	if ready != nil && ready.Status == metav1.ConditionTrue && status.Phase != v1alpha1.PhaseReady {
		t.Fatalf("Ready condition true in phase %s: %+v", status.Phase, status)
	}
}

// fuzzBytes hands out the bytes of a fuzz input, then zeros.
type fuzzBytes []byte

func (b *fuzzBytes) next() byte {
	if len(*b) == 0 {
		return 0
	}
	v := (*b)[0]
	*b = (*b)[1:]
	return v
}

func (b *fuzzBytes) pick(n int) int { return int(b.next()) % n }

var (
	fuzzConditionTypes = []string{v1alpha1.ConditionScaled, v1alpha1.ConditionReady, "Progressing", "example.com/Custom"}
	fuzzReasons        = []string{
		v1alpha1.ReasonScaledFromZero, v1alpha1.ReasonScaledUp, v1alpha1.ReasonAlreadyScaled, v1alpha1.ReasonRescaleWindow,
		v1alpha1.ReasonScaleFight, v1alpha1.ReasonTargetReady, v1alpha1.ReasonWaitingForReplicas, v1alpha1.ReasonReadyTimeout,
		v1alpha1.ReasonTargetNotFound, v1alpha1.ReasonKindUnknown, v1alpha1.ReasonNoScaleSubresource, v1alpha1.ReasonKindNotAllowed,
		v1alpha1.ReasonForbidden, v1alpha1.ReasonRejected, v1alpha1.ReasonNotOptedIn, v1alpha1.ReasonAboveOwnerCap,
		v1alpha1.ReasonTargetScaledDown, "Custom_reason:1",
	}
	fuzzPhases   = []v1alpha1.ScaleRequestPhase{v1alpha1.PhasePending, v1alpha1.PhaseScaling, v1alpha1.PhaseReady, v1alpha1.PhaseIdle, v1alpha1.PhaseFailed}
	fuzzStatuses = []metav1.ConditionStatus{metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionUnknown}
	fuzzFailures = []scaling.Reason{
		scaling.ReasonInvalidTarget, scaling.ReasonKindUnknown, scaling.ReasonNoScaleSubresource, scaling.ReasonTargetNotFound,
		scaling.ReasonForbidden, scaling.ReasonRejected, scaling.ReasonConflict, scaling.ReasonTransient,
	}
)

// fuzzStatus builds a status the API server admits: whatever an earlier controller (or anyone
// with status rights) may have left.
func fuzzStatus(b *fuzzBytes, generation int64) v1alpha1.ScaleRequestStatus {
	status := v1alpha1.ScaleRequestStatus{
		Phase:              fuzzPhases[b.pick(len(fuzzPhases))],
		ObservedGeneration: max(generation-int64(b.pick(3)), 0),
	}
	if b.next()%2 == 1 {
		status.LastScaleTime = &metav1.Time{Time: t0.Add(-time.Duration(b.next()) * time.Second)}
	}
	if b.next()%2 == 1 {
		status.PreviousReplicas = new(int32(b.pick(4)))
	}
	status.Replicas, status.ReadyReplicas = int32(b.pick(4)), int32(b.pick(4))
	for range b.pick(4) {
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{
			Type:               fuzzConditionTypes[b.pick(len(fuzzConditionTypes))],
			Status:             fuzzStatuses[b.pick(len(fuzzStatuses))],
			Reason:             fuzzReasons[b.pick(len(fuzzReasons))],
			Message:            strings.Repeat("m", b.pick(8)),
			ObservedGeneration: max(generation-int64(b.pick(3)), 0),
			LastTransitionTime: metav1.Time{Time: t0.Add(-time.Duration(b.next()) * time.Second)},
		})
	}
	return status
}

// FuzzSync runs the sync handler over any ScaleRequest the schema admits, in any state a
// previous controller may have left, through a script of scaler answers, target states, clock
// steps and new signals: it must not panic, must write status only, and every status it
// leaves must be valid and about the request's current generation.
func FuzzSync(f *testing.F) {
	f.Add("apps/v1", "Deployment", "web", int32(1), []byte{}, []byte{})
	f.Add("apps/v1", "Deployment", "web", int32(3), []byte{1, 0, 1, 10, 1, 2, 1, 1, 2, 0, 0, 0, 2, 0, 6, 3, 1, 1, 6, 0, 0, 3},
		[]byte{0, 1, 3, 2, 1, 1, 1, 0, 40, 0, 3, 0, 2, 1, 1, 1, 1, 2, 1, 0})
	f.Add("apps/v1", "StatefulSet", "db-0", int32(1000), []byte{3, 0, 0, 0, 0, 0, 2, 0, 1, 8, 0, 0}, []byte{2, 3, 1, 0, 0, 0, 0, 31, 1})
	f.Add("example.com/v1beta2", "Widget", "w.x", int32(2), []byte{2, 1}, []byte{1, 0, 0, 4, 0, 0, 0, 0, 255, 0, 1, 6, 2})
	f.Add("v1", "ReplicationController", "rc", int32(1), []byte{}, []byte{2, 5, 0, 0, 0, 0, 0, 0, 0, 0, 2, 4})
	f.Add("apps/v1", "ReplicaSet", "rs", int32(5), []byte{0, 0, 1, 200, 1, 0}, []byte{0, 1, 0, 5, 1, 1, 3, 7, 0, 1})
	// Through Scaling to Ready (found by random search).
	f.Add("apps/v1", "Deployment", "web", int32(2), []byte{0x3b, 0x9e, 0x74, 0x8a, 0x58, 0x67, 0x7a, 0xc, 0x56, 0x34, 0x8f, 0x89, 0x21},
		[]byte{0xa2, 0x66, 0xb1, 0x1d, 0xf, 0x33, 0x4c, 0x62, 0xfe, 0x52, 0xba, 0x53, 0xaf, 0x19, 0x77, 0x9c, 0xb2, 0x94, 0x8b, 0x65, 0x70})

	f.Fuzz(fuzzSync)
}

// fuzzSync is FuzzSync's body.
func fuzzSync(t *testing.T, apiVersion, kind, name string, minReplicas int32, statusBytes, script []byte) {
	{
		in, steps := fuzzBytes(statusBytes), fuzzBytes(script)
		generation := 1 + int64(in.pick(5))
		sr := newRequest(kind)
		sr.Generation = generation
		sr.Spec.ScaleTargetRef = v1alpha1.CrossVersionObjectReference{APIVersion: apiVersion, Kind: kind, Name: name}
		sr.Spec.MinReplicas = minReplicas
		if in.next()%2 == 1 {
			sr.Spec.RequestedAt = &metav1.MicroTime{Time: t0.Add(time.Duration(int8(in.next())) * time.Second)}
		}
		sr.Status = fuzzStatus(&in, generation)
		if !admitted(sr) {
			return
		}
		allowed := DefaultAllowedKinds
		if in.next()%2 == 1 {
			allowed = "*"
		}
		fx := newFixture(t, allowed, sr)
		key := sr.Namespace + "/" + sr.Name
		id := targetID(sr)

		for step := 0; step < 8 && (step == 0 || len(steps) > 0); step++ {
			// The scaler's answer.
			switch mode := steps.pick(3); mode {
			case 0, 1:
				previous := int32(steps.pick(3))
				fx.scaler.err = nil
				fx.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: previous,
					Replicas: max(previous, sr.Spec.MinReplicas), Scaled: previous < sr.Spec.MinReplicas}
				fx.scaler.current = scaling.Result{Resource: deployments, PreviousReplicas: previous, Replicas: previous}
			default:
				reason := fuzzFailures[steps.pick(len(fuzzFailures))]
				fx.scaler.err = &scaling.Error{Reason: reason, Target: name, Err: errors.New("fuzzed " + string(reason))}
			}
			// What the target watch has seen.
			fx.watcher.mu.Lock()
			switch steps.pick(3) {
			case 0:
				delete(fx.watcher.states, id)
			case 1:
				fx.watcher.states[id] = scaling.TargetState{}
			default:
				replicas := int32(steps.pick(4)) * sr.Spec.MinReplicas / 2
				fx.watcher.states[id] = scaling.TargetState{Exists: true, Replicas: replicas,
					ReadyReplicas: min(replicas, int32(steps.pick(4))*sr.Spec.MinReplicas/2), Current: steps.next()%2 == 0}
			}
			fx.watcher.mu.Unlock()
			fx.clock.Step(time.Duration(steps.next()) * time.Second)
			// A new signal.
			if steps.next()%4 == 3 {
				obj, _, _ := fx.informer.Informer().GetIndexer().GetByKey(key)
				bumped := obj.(*v1alpha1.ScaleRequest).DeepCopy()
				bumped.Generation++
				bumped.ResourceVersion = nextVersion(bumped.ResourceVersion)
				bumped.Spec.RequestedAt = &metav1.MicroTime{Time: fx.clock.Now()}
				if err := fx.put(bumped); err != nil {
					t.Fatal(err)
				}
				if err := fx.client.Tracker().Update(v1alpha1.SchemeGroupVersion.WithResource("scalerequests"), bumped, bumped.Namespace); err != nil {
					t.Fatal(err)
				}
			}

			obj, _, _ := fx.informer.Informer().GetIndexer().GetByKey(key)
			before := obj.(*v1alpha1.ScaleRequest)
			err := fx.sync()
			writes := fx.statusWrites() // fails the test on any write but status
			fx.client.ClearActions()
			for _, e := range fx.events() {
				fields := strings.SplitN(e, " ", 3)
				if len(fields) < 2 || (fields[0] != corev1.EventTypeNormal && fields[0] != corev1.EventTypeWarning) || !conditionReason.MatchString(fields[1]) {
					t.Fatalf("malformed event %q", e)
				}
			}
			for _, w := range writes {
				if w.Generation != before.Generation {
					t.Fatalf("wrote a status for generation %d of generation %d", w.Generation, before.Generation)
				}
				checkStatus(t, w)
			}
			if err != nil {
				if len(writes) > 0 {
					t.Fatalf("status written and error returned: %v", err)
				}
				continue
			}
			if len(writes) == 0 && settled(before) {
				// Left alone, as it should be: whatever set this status, it is not this sync's.
				continue
			}
			// The status now stored: the one written, or the one the sync found already right.
			current := before
			if len(writes) > 0 {
				current = writes[len(writes)-1].DeepCopy()
				current.ResourceVersion = nextVersion(before.ResourceVersion)
				// The informer delivers the write.
				if err := fx.put(current); err != nil {
					t.Fatal(err)
				}
			}
			checkStatus(t, current)
			if fx.ctrl.Active() > 1 {
				t.Fatalf("one request holds %d watches", fx.ctrl.Active())
			}
		}
	}
}

func nextVersion(rv string) string {
	n, _ := strconv.Atoi(rv)
	return fmt.Sprint(n + 1)
}
