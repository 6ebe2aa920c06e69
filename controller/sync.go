package controller

import (
	"context"
	"fmt"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/scaling"
)

// sync brings one ScaleRequest's latest signal forward: scale the target if the signal is new
// (or the target fell below the minimum while the request was active), follow the target until
// it is ready, and record each step in status. It returns an error only for failures a prompt
// retry may fix; everything else ends in status, an event and, where something outside may fix
// it, a re-check one rescale window later.
func (c *Controller) sync(ctx context.Context, key cache.ObjectName) error {
	src := c.sourceFor(key.Namespace)
	if src.indexer == nil {
		return nil
	}
	obj, exists, err := src.indexer.GetByKey(key.String())
	if err != nil {
		return err
	}
	cached, ok := obj.(*v1alpha1.ScaleRequest)
	if !exists || !ok {
		c.writes.forget(key)
		c.release(key)
		return nil
	}
	// The informer may not have delivered the controller's own latest write yet.
	cached = c.writes.newest(cached)
	if settled(cached) {
		c.release(key)
		return nil
	}

	sr := cached.DeepCopy()
	r := &reconciliation{c: c, sr: sr, now: c.clock.Now(), id: targetID(sr), key: key}
	if err := r.run(ctx); err != nil {
		// Transient: the queue's backoff retries; status waits for an outcome worth reporting.
		return err
	}
	sr.Status.Phase = phaseOf(sr)
	if err := c.writeStatus(ctx, cached, sr); err != nil {
		return err
	}
	for _, e := range r.events {
		c.recorder.Event(sr, e.kind, e.reason, e.message)
	}
	if r.done {
		c.release(key)
	}
	if r.requeueAfter > 0 {
		c.queue.AddAfter(key, r.requeueAfter)
	}
	return nil
}

// settled reports whether the latest signal needs no more work: it is Ready, or it failed in a
// way only a new signal (a spec change) can change.
func settled(sr *v1alpha1.ScaleRequest) bool {
	if sr.Status.ObservedGeneration != sr.Generation {
		return false
	}
	switch sr.Status.Phase {
	case v1alpha1.PhaseReady:
		return true
	case v1alpha1.PhaseFailed:
		scaled := meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionScaled)
		ready := meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionReady)
		return (scaled != nil && scaled.Reason == v1alpha1.ReasonNoScaleSubresource) ||
			(ready != nil && ready.Reason == v1alpha1.ReasonReadyTimeout)
	}
	return false
}

type event struct{ kind, reason, message string }

// reconciliation is one pass of sync over a private copy of a ScaleRequest.
type reconciliation struct {
	c   *Controller
	sr  *v1alpha1.ScaleRequest
	now time.Time
	id  string
	key cache.ObjectName

	events       []event
	requeueAfter time.Duration
	// done is set when the request no longer needs its target watched.
	done bool
}

func (r *reconciliation) run(ctx context.Context) error {
	sr, status := r.sr, &r.sr.Status
	status.ObservedGeneration = sr.Generation
	if ready := meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionReady); ready != nil &&
		(ready.ObservedGeneration != sr.Generation || ready.Status == metav1.ConditionTrue) {
		// A new signal: readiness and cold start are measured afresh. So are they when Ready is
		// true for this signal but the request is not settled: that is not this controller's
		// finding (someone else wrote the status), and would read as Ready while a scale waits.
		meta.RemoveStatusCondition(&status.Conditions, v1alpha1.ConditionReady)
		status.ReadyTime, status.ColdStartDuration = nil, nil
	}
	minReplicas := max(sr.Spec.MinReplicas, 1)
	target := scaling.Target{Namespace: sr.Namespace, Ref: autoscalingv1.CrossVersionObjectReference{
		APIVersion: sr.Spec.ScaleTargetRef.APIVersion, Kind: sr.Spec.ScaleTargetRef.Kind, Name: sr.Spec.ScaleTargetRef.Name,
	}}

	gk, err := target.GroupKind()
	if err != nil {
		r.failScaled(v1alpha1.ReasonKindUnknown, fmt.Sprintf("invalid target reference: %v", err))
		r.done = true
		return nil
	}
	if !r.c.config.AllowedKinds.Allows(gk) {
		r.failScaled(v1alpha1.ReasonKindNotAllowed, fmt.Sprintf(
			"this controller is not allowed to scale %s (allowed kinds: %s)", gk, r.c.config.AllowedKinds))
		r.done = true
		return nil
	}

	// The latest signal is served once Scaled is True for the current generation. A fight is
	// the target falling below the minimum after that, while the request is still active.
	served, fightDeferred := false, false
	if cond := meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionScaled); cond != nil && cond.ObservedGeneration == sr.Generation {
		served = cond.Status == metav1.ConditionTrue
		fightDeferred = cond.Status == metav1.ConditionFalse && cond.Reason == v1alpha1.ReasonScaleFight
	}
	state, seen := r.c.watcher.State(r.id)
	fight := fightDeferred || (served && seen && state.Exists && state.Replicas < minReplicas)

	if !served || fight {
		if err := r.scale(ctx, target, minReplicas, fight, state); err != nil || !r.scaledNow() {
			return err
		}
		state, seen = r.c.watcher.State(r.id)
	} else if !r.c.holds(r.key) {
		// Served, but not by this process: its predecessor crashed or lost the lease between
		// the scale and readiness. Without a watch here, readiness would never arrive.
		if err := r.follow(ctx, target); err != nil || !r.scaledNow() {
			return err
		}
		state, seen = r.c.watcher.State(r.id)
	}
	r.followReadiness(minReplicas, state, seen)
	return nil
}

// follow starts watching a target that was scaled for the current signal before this process
// took the request over.
func (r *reconciliation) follow(ctx context.Context, target scaling.Target) error {
	current, err := r.c.scaler.Current(ctx, target)
	if err != nil {
		return r.scaleFailed(ctx, target, err)
	}
	r.c.watcher.Watch(context.WithoutCancel(ctx), r.id, current.Resource, r.sr.Namespace, target.Ref.Name)
	r.c.hold(r.key, r.id)
	return nil
}

// scaledNow reports whether Scaled is True for the current generation.
func (r *reconciliation) scaledNow() bool {
	cond := meta.FindStatusCondition(r.sr.Status.Conditions, v1alpha1.ConditionScaled)
	return cond != nil && cond.Status == metav1.ConditionTrue && cond.ObservedGeneration == r.sr.Generation
}

// scale raises the target, unless the rescale window defers it.
func (r *reconciliation) scale(ctx context.Context, target scaling.Target, minReplicas int32, fight bool, state scaling.TargetState) error {
	status := &r.sr.Status
	logger := klog.FromContext(ctx)

	var lastScale time.Time
	if status.LastScaleTime != nil {
		lastScale = status.LastScaleTime.Time
	}
	wait := r.c.window.wait(r.id, lastScale, r.now)
	if wait > 0 && !fight {
		// The window limits writes, not signals: a target that is already up needs no write.
		current, err := r.c.scaler.Current(ctx, target)
		if err != nil {
			return r.scaleFailed(ctx, target, err)
		}
		if current.Replicas >= minReplicas {
			return r.scaled(ctx, target, minReplicas, false, current)
		}
	}
	if wait > 0 {
		// The message names when, not how long: it must not change from one sync to the next
		// within the window, or every event from the target would cost a status write.
		reason, message := v1alpha1.ReasonRescaleWindow, fmt.Sprintf(
			"%s/%s was scaled less than %s ago; scaling again at %s", target.Ref.Kind, target.Ref.Name,
			r.c.config.RescaleDuration, r.now.Add(wait).UTC().Format("2006-01-02T15:04:05.000Z07:00"))
		if fight {
			reason = v1alpha1.ReasonScaleFight
			message = fmt.Sprintf("%s/%s was set to %d replicas by something else while this request was active; %s",
				target.Ref.Kind, target.Ref.Name, state.Replicas, message)
			if cond := meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionScaled); cond == nil || cond.Reason != reason {
				r.events = append(r.events, event{corev1.EventTypeWarning, reason, message})
			}
		}
		r.setCondition(v1alpha1.ConditionScaled, metav1.ConditionFalse, reason, message)
		r.c.metrics.scales.WithLabelValues(v1alpha1.ReasonRescaleWindow).Inc()
		logger.V(2).Info("Scale deferred by the rescale window", "target", target.String(), "wait", wait)
		r.requeueAfter = wait
		return nil
	}

	result, err := r.c.scaler.ScaleUp(ctx, target, minReplicas)
	if err != nil {
		return r.scaleFailed(ctx, target, err)
	}
	return r.scaled(ctx, target, minReplicas, fight, result)
}

// scaled records the outcome of a scale (or of finding the target already scaled) and starts
// following the target's readiness.
func (r *reconciliation) scaled(ctx context.Context, target scaling.Target, minReplicas int32, fight bool, result scaling.Result) error {
	sr, status := r.sr, &r.sr.Status
	logger := klog.FromContext(ctx)
	if result.Scaled {
		// Restart the watch so that every state it reports comes after this write: an event
		// still in flight from before it would look like the target falling back below minimum.
		r.c.watcher.Forget(r.id)
	}
	r.c.watcher.Watch(context.WithoutCancel(ctx), r.id, result.Resource, sr.Namespace, target.Ref.Name)
	r.c.hold(r.key, r.id)

	previous := result.PreviousReplicas
	status.PreviousReplicas = &previous
	status.Replicas = result.Replicas
	ref := target.Ref.Kind + "/" + target.Ref.Name

	var reason, message string
	switch {
	case !result.Scaled:
		reason, message = v1alpha1.ReasonAlreadyScaled, fmt.Sprintf("%s already has %d replicas (minimum %d); left as it is", ref, result.Replicas, minReplicas)
	case fight:
		reason, message = v1alpha1.ReasonScaleFight, fmt.Sprintf("%s was set to %d replicas by something else while this request was active; scaled it back to %d", ref, previous, result.Replicas)
		r.events = append(r.events, event{corev1.EventTypeWarning, v1alpha1.ReasonScaleFight, message})
	case previous == 0:
		reason, message = v1alpha1.ReasonScaledFromZero, fmt.Sprintf("Scaled %s from 0 to %d replicas", ref, result.Replicas)
	default:
		reason, message = v1alpha1.ReasonScaledUp, fmt.Sprintf("Scaled %s from %d to %d replicas", ref, previous, result.Replicas)
	}
	if result.Scaled {
		// The window runs from the write's answer, not from the start of the sync: time spent
		// before the write (a slow API server, a busy node) must not shorten the gap to the next.
		written := r.c.clock.Now()
		r.c.window.record(r.id, written)
		status.LastScaleTime = &metav1.Time{Time: written}
		if !fight {
			r.events = append(r.events, event{corev1.EventTypeNormal, reason, message})
			r.c.metrics.wakeToScaled.Observe(nonNegative(written.Sub(signalTime(sr))).Seconds())
		}
		logger.Info("Scaled target", "target", target.String(), "from", previous, "to", result.Replicas)
	}
	r.c.metrics.scales.WithLabelValues(reason).Inc()
	r.setCondition(v1alpha1.ConditionScaled, metav1.ConditionTrue, reason, message)
	return nil
}

// scaleFailed records a failed scale. Failures that someone else may fix (a target created
// later, a CRD installed, RBAC granted) are re-checked once per rescale window; transient ones
// go back to the queue's backoff.
func (r *reconciliation) scaleFailed(ctx context.Context, target scaling.Target, err error) error {
	reason := scaling.ReasonOf(err)
	r.c.metrics.scales.WithLabelValues(string(reason)).Inc()
	ref := target.Ref.APIVersion + " " + target.Ref.Kind + "/" + target.Ref.Name
	var message string
	switch reason {
	case scaling.ReasonTargetNotFound:
		message = fmt.Sprintf("%s does not exist in namespace %s", ref, target.Namespace)
	case scaling.ReasonKindUnknown, scaling.ReasonInvalidTarget:
		reason = scaling.ReasonKindUnknown
		message = fmt.Sprintf("the API server does not serve kind %s (is its CRD installed?)", ref)
	case scaling.ReasonNoScaleSubresource:
		message = fmt.Sprintf("kind %s has no /scale subresource, so it cannot be scaled", target.Ref.Kind)
	case scaling.ReasonForbidden:
		message = fmt.Sprintf("the controller is not allowed to scale %s: %v", ref, err)
	default:
		klog.FromContext(ctx).V(2).Info("Scale failed, will retry", "target", target.String(), "err", err)
		return err
	}
	r.failScaled(string(reason), message)
	if reason == scaling.ReasonNoScaleSubresource {
		r.done = true
		return nil
	}
	r.requeueAfter = r.c.config.RescaleDuration
	return nil
}

// followReadiness updates replicas and readiness from the target watch, and fails the request
// when the target does not become ready in time.
func (r *reconciliation) followReadiness(minReplicas int32, state scaling.TargetState, seen bool) {
	sr, status := r.sr, &r.sr.Status
	ref := sr.Spec.ScaleTargetRef.Kind + "/" + sr.Spec.ScaleTargetRef.Name
	if seen {
		if !state.Exists {
			r.failScaled(v1alpha1.ReasonTargetNotFound, fmt.Sprintf("%s was deleted while this request was active", ref))
			r.done = true
			r.requeueAfter = r.c.config.RescaleDuration
			return
		}
		status.Replicas, status.ReadyReplicas = state.Replicas, state.ReadyReplicas
		if state.ReadyFor(minReplicas) {
			start := signalTime(sr)
			coldStart := nonNegative(r.now.Sub(start)).Round(time.Millisecond)
			status.ReadyTime = &metav1.Time{Time: r.now}
			status.ColdStartDuration = &metav1.Duration{Duration: coldStart}
			message := fmt.Sprintf("%s has %d/%d ready replicas, %s after the signal", ref, state.ReadyReplicas, minReplicas, coldStart)
			r.setCondition(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonTargetReady, message)
			r.events = append(r.events, event{corev1.EventTypeNormal, v1alpha1.ReasonTargetReady, message})
			r.c.metrics.wakeToReady.Observe(coldStart.Seconds())
			r.done = true
			return
		}
	}

	deadline := signalTime(sr)
	if status.LastScaleTime != nil && status.LastScaleTime.After(deadline) {
		deadline = status.LastScaleTime.Time
	}
	deadline = deadline.Add(r.c.config.ReadyTimeout)
	if !r.now.Before(deadline) {
		message := fmt.Sprintf("%s did not get %d ready replicas within %s (has %d)", ref, minReplicas, r.c.config.ReadyTimeout, status.ReadyReplicas)
		r.setCondition(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonReadyTimeout, message)
		r.events = append(r.events, event{corev1.EventTypeWarning, v1alpha1.ReasonReadyTimeout, message})
		r.done = true
		return
	}
	r.setCondition(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonWaitingForReplicas,
		fmt.Sprintf("waiting for %s to have %d ready replicas", ref, minReplicas))
	// Readiness arrives as watch events; this re-check is the fallback, and the timeout's alarm.
	r.requeueAfter = min(r.c.config.RescaleDuration, deadline.Sub(r.now))
}

// failScaled sets Scaled=False with a failure reason; readiness no longer applies.
func (r *reconciliation) failScaled(reason, message string) {
	meta.RemoveStatusCondition(&r.sr.Status.Conditions, v1alpha1.ConditionReady)
	r.setCondition(v1alpha1.ConditionScaled, metav1.ConditionFalse, reason, message)
}

// setCondition sets a condition for the current generation and queues a Warning event when a
// condition newly turns to a failure reason.
func (r *reconciliation) setCondition(conditionType string, status metav1.ConditionStatus, reason, message string) {
	conditions := &r.sr.Status.Conditions
	previous := meta.FindStatusCondition(*conditions, conditionType)
	isNew := previous == nil || previous.Reason != reason || previous.Status != status
	meta.SetStatusCondition(conditions, metav1.Condition{
		Type: conditionType, Status: status, Reason: reason, Message: message,
		ObservedGeneration: r.sr.Generation, LastTransitionTime: metav1.Time{Time: r.now},
	})
	if isNew && status == metav1.ConditionFalse && isFailure(reason) {
		r.events = append(r.events, event{corev1.EventTypeWarning, reason, message})
	}
}

// isFailure reports whether a reason means the request cannot be served as it stands.
func isFailure(reason string) bool {
	switch reason {
	case v1alpha1.ReasonTargetNotFound, v1alpha1.ReasonKindUnknown, v1alpha1.ReasonNoScaleSubresource,
		v1alpha1.ReasonKindNotAllowed, v1alpha1.ReasonForbidden:
		return true
	}
	return false
}

// phaseOf summarises the conditions; run keeps only the current generation's Ready condition.
func phaseOf(sr *v1alpha1.ScaleRequest) v1alpha1.ScaleRequestPhase {
	scaled := meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionScaled)
	ready := meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionReady)
	switch {
	case scaled != nil && scaled.Status == metav1.ConditionFalse && isFailure(scaled.Reason):
		return v1alpha1.PhaseFailed
	case ready != nil && ready.Reason == v1alpha1.ReasonReadyTimeout:
		return v1alpha1.PhaseFailed
	case ready != nil && ready.Status == metav1.ConditionTrue:
		return v1alpha1.PhaseReady
	case scaled != nil && scaled.Status == metav1.ConditionTrue:
		return v1alpha1.PhaseScaling
	}
	return v1alpha1.PhasePending
}

// writeStatus writes sr's status if it differs from the cached object's.
func (c *Controller) writeStatus(ctx context.Context, cached, sr *v1alpha1.ScaleRequest) error {
	if equality.Semantic.DeepEqual(cached.Status, sr.Status) {
		return nil
	}
	updated, err := c.client.ZerowakeV1alpha1().ScaleRequests(sr.Namespace).UpdateStatus(ctx, sr, metav1.UpdateOptions{FieldManager: FieldManager})
	switch {
	case err == nil:
		c.writes.record(updated)
		c.metrics.statusWrites.WithLabelValues("ok").Inc()
	case apierrors.IsConflict(err):
		c.metrics.statusWrites.WithLabelValues("conflict").Inc()
	case apierrors.IsNotFound(err):
		// Deleted while we worked: nothing left to report to.
		c.metrics.statusWrites.WithLabelValues("gone").Inc()
		return nil
	default:
		c.metrics.statusWrites.WithLabelValues("error").Inc()
	}
	return err
}

// hold records that key waits on the target id's watch.
func (c *Controller) hold(key cache.ObjectName, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watching[key] = id
}

// holds reports whether key holds a target watch.
func (c *Controller) holds(key cache.ObjectName) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.watching[key]
	return ok
}

// release drops key's hold on its target watch, and the watch itself when no other request
// holds it.
func (c *Controller) release(key cache.ObjectName) {
	c.mu.Lock()
	id, ok := c.watching[key]
	delete(c.watching, key)
	shared := false
	for _, other := range c.watching {
		if other == id {
			shared = true
			break
		}
	}
	c.mu.Unlock()
	if ok && !shared {
		c.watcher.Forget(id)
	}
}

// signalTime is when the latest signal was given: spec.requestedAt, or the creation time.
func signalTime(sr *v1alpha1.ScaleRequest) time.Time {
	if sr.Spec.RequestedAt != nil {
		return sr.Spec.RequestedAt.Time
	}
	return sr.CreationTimestamp.Time
}

func nonNegative(d time.Duration) time.Duration { return max(d, 0) }
