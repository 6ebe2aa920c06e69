package controller

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
)

// signalAllowance is how much earlier than the controller's own first sight of a signal the
// resolver's clock may place it. It covers the informer's delivery (milliseconds, seconds in a
// saturated burst) and the skew between the resolver's clock and the controller's. A
// spec.requestedAt outside [first sight - signalAllowance, first sight] is a clock the
// controller does not trust: in the future it would record a cold start of 0, months ago a
// cold start of months, and both would feed the histogram and the slow-cold-start alert.
const signalAllowance = 5 * time.Second

// sighting is when this process first saw one signal (a request's uid and generation).
type sighting struct {
	uid        types.UID
	generation int64
	at         time.Time
}

// signalSightings remembers when the controller first saw each unsettled signal: the informer's
// event for it, or the first sync if that came first. Standby replicas run the informer too, so
// a new leader knows when signals made before it led arrived. Entries live while a signal is
// unsettled: they are dropped once its request is settled or deleted.
type signalSightings struct {
	mu   sync.Mutex
	seen map[cache.ObjectName]sighting
}

func newSignalSightings() *signalSightings {
	return &signalSightings{seen: map[cache.ObjectName]sighting{}}
}

// saw records that sr's current signal was seen at now, unless it was seen before.
func (s *signalSightings) saw(sr *v1alpha1.ScaleRequest, now time.Time) {
	key := cache.MetaObjectToName(sr)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.seen[key]; ok && old.uid == sr.UID && old.generation == sr.Generation {
		return
	}
	s.seen[key] = sighting{uid: sr.UID, generation: sr.Generation, at: now}
}

// firstSeen returns when sr's current signal was first seen by this process.
func (s *signalSightings) firstSeen(sr *v1alpha1.ScaleRequest) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.seen[cache.MetaObjectToName(sr)]
	if !ok || old.uid != sr.UID || old.generation != sr.Generation {
		return time.Time{}, false
	}
	return old.at, true
}

func (s *signalSightings) forget(key cache.ObjectName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.seen, key)
}

func (s *signalSightings) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

// requestedTime is when the resolver says the latest signal was given: spec.requestedAt, or
// the creation time.
func requestedTime(sr *v1alpha1.ScaleRequest) time.Time {
	if sr.Spec.RequestedAt != nil {
		return sr.Spec.RequestedAt.Time
	}
	return sr.CreationTimestamp.Time
}

// signalTime is when the latest signal was given, as far as the controller can vouch for it:
// the resolver's time, clamped to [observed - signalAllowance, observed], where observed is
// the earliest moment a controller is known to have seen the signal (see observedSignal).
func (r *reconciliation) signalTime() time.Time {
	observed := r.observedSignal()
	requested := requestedTime(r.sr)
	switch {
	case requested.After(observed):
		return observed
	case requested.Before(observed.Add(-signalAllowance)):
		return observed.Add(-signalAllowance)
	}
	return requested
}

// observedSignal is the earliest moment a controller is known to have seen the current signal:
// this process's first sight of it, and what a predecessor recorded for it in status (the start
// of its wait for readiness, its scale write for this signal), each of which came after the
// signal. This pass's own time bounds it when nothing else does.
func (r *reconciliation) observedSignal() time.Time {
	sr := r.sr
	observed := r.now
	earlier := func(t time.Time) {
		if !t.IsZero() && t.Before(observed) {
			observed = t
		}
	}
	if seen, ok := r.c.sightings.firstSeen(sr); ok {
		earlier(seen)
	}
	if ready := meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionReady); ready != nil &&
		ready.ObservedGeneration == sr.Generation && ready.Reason == v1alpha1.ReasonWaitingForReplicas {
		// Removed on every new signal (run), so its transition is this signal's.
		earlier(ready.LastTransitionTime.Time)
	}
	if scaled := meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionScaled); scaled != nil &&
		scaled.ObservedGeneration == sr.Generation && scaled.Status == metav1.ConditionTrue && sr.Status.LastScaleTime != nil {
		switch scaled.Reason {
		case v1alpha1.ReasonScaledFromZero, v1alpha1.ReasonScaledUp, v1alpha1.ReasonScaleFight:
			// The Scaled condition's own transition time may be an earlier signal's (it does
			// not move while it stays True); lastScaleTime is this signal's write.
			earlier(sr.Status.LastScaleTime.Time)
		}
	}
	return observed
}
