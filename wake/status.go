package wake

import (
	"errors"
	"fmt"
	"time"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Errors returned by Client methods. Compare with errors.Is.
var (
	// ErrNotStarted: Wake or WaitReady was called before Start returned successfully.
	ErrNotStarted = errors.New("wake: client not started")
	// ErrStopped: the client was stopped (Stop, or the context given to Start ended).
	ErrStopped = errors.New("wake: client stopped")
	// ErrDeleted: the ScaleRequest being waited for was deleted.
	ErrDeleted = errors.New("wake: scalerequest deleted")
	// ErrNamespaceNotWatched: the target's namespace is outside Options.Namespace, so the
	// informer cannot see its ScaleRequest.
	ErrNamespaceNotWatched = errors.New("wake: namespace not watched by this client")
	// ErrFailed matches every *FailedError (errors.Is(err, ErrFailed)).
	ErrFailed = errors.New("wake: scale request failed")
)

// FailedError says that the controller gave up on the latest signal: the ScaleRequest's phase is
// Failed for its current generation. Reason is one of the v1alpha1 failure reasons
// (TargetNotFound, KindUnknown, NoScaleSubresource, KindNotAllowed, Forbidden, Rejected,
// NotOptedIn, AboveOwnerCap, ReadyTimeout).
type FailedError struct {
	Namespace, Name string
	// Generation is the metadata.generation (the signal) that failed.
	Generation int64
	// Condition is the condition type that carries the reason: "Scaled" or "Ready".
	Condition string
	Reason    string
	Message   string
}

func (e *FailedError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("scalerequest %s/%s failed: %s", e.Namespace, e.Name, e.Reason)
	}
	return fmt.Sprintf("scalerequest %s/%s failed: %s: %s", e.Namespace, e.Name, e.Reason, e.Message)
}

// Is makes errors.Is(err, ErrFailed) true for every *FailedError.
func (e *FailedError) Is(target error) bool { return target == ErrFailed }

// Status is a ScaleRequest as the informer last saw it, interpreted for its latest signal
// (its metadata.generation).
type Status struct {
	// Exists is false when the informer holds no ScaleRequest for the target.
	Exists bool
	// Mismatch: the ScaleRequest named after the target is for another workload (a
	// StatefulSet and a Deployment sharing a name); nothing else in Status is about the target.
	// Only Client.Status sets it; StatusOf knows no target.
	Mismatch bool
	// Generation is metadata.generation: the latest signal.
	Generation int64
	// ObservedGeneration is status.observedGeneration: the signal the controller last acted on.
	ObservedGeneration int64
	// Observed is ObservedGeneration == Generation: the controller has seen the latest signal.
	// Phase, Replicas and ReadyReplicas describe an older signal until it is true.
	Observed bool
	// Phase is status.phase.
	Phase v1alpha1.ScaleRequestPhase
	// MinReplicas is spec.minReplicas (1 when unset).
	MinReplicas   int32
	Replicas      int32
	ReadyReplicas int32
	// Ready: the Ready condition is True for the latest signal. From Client.Status also: the
	// request is for this target and asks at least the target's MinReplicas (Ready for 1 is
	// not Ready for 3; Wake raises the request).
	Ready bool
	// Failed: the phase is Failed for the latest signal.
	Failed bool
	// Reason and Message of the condition that best explains the phase for the latest signal
	// (the failing condition when Failed; Scaled when it is False, e.g. RescaleWindow;
	// otherwise Ready, e.g. WaitingForReplicas or TargetReady).
	Reason, Message string
	// FailedCondition is the type of the condition carrying a failure reason, when Failed.
	FailedCondition string
	// ColdStart is status.coldStartDuration when Ready.
	ColdStart time.Duration
}

// failureReasons are the reasons the controller sets when it gives up on a signal.
func isFailureReason(r string) bool {
	switch r {
	case v1alpha1.ReasonTargetNotFound, v1alpha1.ReasonKindUnknown, v1alpha1.ReasonNoScaleSubresource,
		v1alpha1.ReasonKindNotAllowed, v1alpha1.ReasonForbidden, v1alpha1.ReasonReadyTimeout,
		v1alpha1.ReasonRejected, v1alpha1.ReasonNotOptedIn, v1alpha1.ReasonAboveOwnerCap:
		return true
	}
	return false
}

// condAt returns the condition of that type if it is about generation gen.
func condAt(conds []metav1.Condition, typ string, gen int64) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == typ {
			if conds[i].ObservedGeneration == gen {
				return &conds[i]
			}
			return nil
		}
	}
	return nil
}

func specMinReplicas(sr *v1alpha1.ScaleRequest) int32 {
	if sr.Spec.MinReplicas <= 0 {
		return 1
	}
	return sr.Spec.MinReplicas
}

// signalTime is when the latest signal was given: spec.requestedAt, or the creation time.
func signalTime(sr *v1alpha1.ScaleRequest) time.Time {
	if sr.Spec.RequestedAt != nil {
		return sr.Spec.RequestedAt.Time
	}
	return sr.CreationTimestamp.Time
}

// active reports whether the latest signal is still being worked on: not yet observed by the
// controller, or observed and Pending or Scaling (or without a phase yet).
func active(sr *v1alpha1.ScaleRequest) bool {
	if sr.Status.ObservedGeneration != sr.Generation {
		return true
	}
	switch sr.Status.Phase {
	case v1alpha1.PhaseReady, v1alpha1.PhaseFailed, v1alpha1.PhaseIdle, v1alpha1.PhaseDraining, v1alpha1.PhaseAsleep:
		return false
	}
	return true
}

// StatusOf interprets a ScaleRequest for its latest signal, following the status contract.
func StatusOf(sr *v1alpha1.ScaleRequest) Status {
	if sr == nil {
		return Status{}
	}
	gen := sr.Generation
	s := Status{
		Exists:             true,
		Generation:         gen,
		ObservedGeneration: sr.Status.ObservedGeneration,
		Observed:           sr.Status.ObservedGeneration == gen,
		Phase:              sr.Status.Phase,
		MinReplicas:        specMinReplicas(sr),
		Replicas:           sr.Status.Replicas,
		ReadyReplicas:      sr.Status.ReadyReplicas,
	}
	conds := sr.Status.Conditions
	scaled := condAt(conds, v1alpha1.ConditionScaled, gen)
	ready := condAt(conds, v1alpha1.ConditionReady, gen)

	if ready != nil && ready.Status == metav1.ConditionTrue {
		s.Ready = true
		s.Reason, s.Message = ready.Reason, ready.Message
		if d := sr.Status.ColdStartDuration; d != nil {
			s.ColdStart = d.Duration
		}
		return s
	}
	if s.Observed && s.Phase == v1alpha1.PhaseFailed {
		s.Failed = true
		var c *metav1.Condition
		for _, cand := range [...]*metav1.Condition{scaled, ready} {
			if cand != nil && cand.Status == metav1.ConditionFalse && isFailureReason(cand.Reason) {
				c = cand
				break
			}
		}
		if c == nil {
			for _, cand := range [...]*metav1.Condition{scaled, ready} {
				if cand != nil && cand.Status == metav1.ConditionFalse {
					c = cand
					break
				}
			}
		}
		if c != nil {
			s.FailedCondition, s.Reason, s.Message = c.Type, c.Reason, c.Message
		} else {
			s.Reason = string(v1alpha1.PhaseFailed)
		}
		return s
	}
	switch {
	case scaled != nil && scaled.Status == metav1.ConditionFalse:
		s.Reason, s.Message = scaled.Reason, scaled.Message
	case ready != nil:
		s.Reason, s.Message = ready.Reason, ready.Message
	case scaled != nil:
		s.Reason, s.Message = scaled.Reason, scaled.Message
	}
	return s
}

// statusFor is StatusOf for target t: a request for another workload is a mismatch, not a
// status of t, and a request Ready for fewer replicas than t asks is not Ready for t.
func statusFor(sr *v1alpha1.ScaleRequest, t *Target) Status {
	if !sameTarget(&sr.Spec.ScaleTargetRef, t) {
		return Status{Exists: true, Mismatch: true, Generation: sr.Generation}
	}
	s := StatusOf(sr)
	if s.Ready && s.MinReplicas < t.minReplicas() {
		s.Ready = false
	}
	return s
}

// failedError builds the error WaitReady returns for a Failed status.
func failedError(sr *v1alpha1.ScaleRequest, s *Status) *FailedError {
	return &FailedError{
		Namespace:  sr.Namespace,
		Name:       sr.Name,
		Generation: s.Generation,
		Condition:  s.FailedCondition,
		Reason:     s.Reason,
		Message:    s.Message,
	}
}
