package controller

import (
	"context"
	"fmt"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/scaling"
)

// hold records that key waits on the target id's watch.
func (c *Controller) hold(key cache.ObjectName, id string) {
	c.mu.Lock()
	previous, had := c.watching[key]
	if had && previous == id {
		c.mu.Unlock()
		return
	}
	lastOfPrevious := had && c.dropHolder(previous)
	c.watching[key] = id
	c.holders[id]++
	c.mu.Unlock()
	if lastOfPrevious {
		c.watcher.Forget(previous)
	}
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
	last := false
	if ok {
		delete(c.watching, key)
		last = c.dropHolder(id)
	}
	c.mu.Unlock()
	if last {
		c.watcher.Forget(id)
	}
}

// dropHolder counts one request fewer holding the target id, and reports whether it was the
// last. A count rather than a scan of watching: a burst releases thousands of holds at once.
// c.mu must be held.
func (c *Controller) dropHolder(id string) bool {
	c.holders[id]--
	if c.holders[id] > 0 {
		return false
	}
	delete(c.holders, id)
	return true
}

// targetOf returns the scaling target a request names.
func targetOf(sr *v1alpha1.ScaleRequest) scaling.Target {
	return scaling.Target{Namespace: sr.Namespace, Ref: autoscalingv1.CrossVersionObjectReference{
		APIVersion: sr.Spec.ScaleTargetRef.APIVersion, Kind: sr.Spec.ScaleTargetRef.Kind, Name: sr.Spec.ScaleTargetRef.Name,
	}}
}

// trackKinds starts the inventory for every allowed kind that ScaleRequests name, so that the
// Ready requests found at start-up follow their targets (and the first wake of a kind does not
// wait for its cache).
func (c *Controller) trackKinds(ctx context.Context) {
	if c.inventory == nil {
		return
	}
	logger := klog.FromContext(ctx)
	seen := map[schema.GroupKind]bool{}
	for _, src := range c.sources {
		for _, obj := range src.indexer.List() {
			sr, ok := obj.(*v1alpha1.ScaleRequest)
			if !ok {
				continue
			}
			target := targetOf(sr)
			gk, err := target.GroupKind()
			if err != nil || seen[gk] || !c.config.AllowedKinds.Allows(gk) {
				continue
			}
			seen[gk] = true
			resource, err := c.scaler.Resolve(ctx, target)
			if err != nil {
				logger.V(2).Info("Not following a kind ScaleRequests name", "groupKind", gk, "err", err)
				continue
			}
			c.inventory.Track(ctx, gk, resource)
		}
	}
}

// following reports whether sr's target is followed through the inventory rather than served:
// it is Ready, Idle, Draining or Asleep for its latest signal, or it lost its ready replicas
// after it was ready.
func following(sr *v1alpha1.ScaleRequest) bool {
	switch {
	case sr.Status.ObservedGeneration != sr.Generation:
		return false
	case sr.Status.Phase == v1alpha1.PhaseReady, sr.Status.Phase == v1alpha1.PhaseIdle,
		sr.Status.Phase == v1alpha1.PhaseDraining, sr.Status.Phase == v1alpha1.PhaseAsleep:
		return true
	}
	return lostReadiness(sr)
}

// lostReadiness reports whether sr was Ready for its latest signal and its target has since
// had fewer than minReplicas ready while keeping minReplicas (a crash loop, a drain): it is
// Scaling with Ready=False TargetNotReady, and is followed like a Ready request until its
// replicas are ready again or the ready timeout ends.
func lostReadiness(sr *v1alpha1.ScaleRequest) bool {
	if sr.Status.Phase != v1alpha1.PhaseScaling || !servedSignal(sr) {
		return false
	}
	ready := meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionReady)
	return ready != nil && ready.Status == metav1.ConditionFalse && ready.Reason == v1alpha1.ReasonTargetNotReady &&
		ready.ObservedGeneration == sr.Generation
}

// followSettled keeps a followed request truthful from the inventory's cache, at no API cost
// while its target is there. Ready means the target has at least minReplicas ready replicas
// now, not only once:
//
//   - set below its minimum (an idler, a GitOps revert), a Ready request becomes Idle, and the
//     next signal wakes it; an Idle request whose target has its minimum ready again is Ready;
//   - still at its minimum but with fewer of them ready (a crash loop, a drain), it becomes
//     Scaling (TargetNotReady), so that nobody is let through to a target with nothing ready;
//     ready again, it is Ready; not ready within the ready timeout of losing them, it fails
//     with ReadyTimeout, so that waiting callers get an answer instead of waiting for ever;
//   - gone from the inventory (deleted, or its owner's mark removed), it fails (targetLeft).
func (c *Controller) followSettled(ctx context.Context, key cache.ObjectName, cached *v1alpha1.ScaleRequest) error {
	if c.inventory == nil || !following(cached) {
		return nil
	}
	target := targetOf(cached)
	gk, err := target.GroupKind()
	if err != nil {
		return nil
	}
	resource, err := c.scaler.Resolve(ctx, target)
	if err != nil {
		return nil // the next signal reports it
	}
	// Lookup waits for the kind's cache the first time, so a target is never taken for gone
	// because the cache has not listed it yet (as at start-up).
	entry, found, err := c.inventory.Lookup(ctx, gk, resource, target.Namespace, target.Ref.Name)
	if err != nil {
		return err
	}
	if !found || !entry.State.Exists {
		return c.targetLeft(ctx, key, cached, target, resource)
	}
	if handled, err := c.sleepStep(ctx, key, cached, target, entry); handled || err != nil {
		return err
	}
	state := entry.State
	minReplicas := max(cached.Spec.MinReplicas, 1)
	ref := target.Ref.Kind + "/" + target.Ref.Name
	now := c.clock.Now()
	sr := cached.DeepCopy()
	setReady := func(status metav1.ConditionStatus, reason, message string) {
		// LastTransitionTime moves only when the status flips: the moment readiness was lost
		// stays put while the request waits, and its deadline with it.
		meta.SetStatusCondition(&sr.Status.Conditions, metav1.Condition{
			Type: v1alpha1.ConditionReady, Status: status, Reason: reason, Message: message,
			ObservedGeneration: sr.Generation, LastTransitionTime: metav1.Time{Time: now},
		})
	}
	wasReady, unready := cached.Status.Phase == v1alpha1.PhaseReady, lostReadiness(cached)
	var e event
	// recheck is when to look again if no event comes first: the deadline of lost readiness.
	var recheck time.Duration
	switch {
	case (wasReady || unready) && state.Replicas < minReplicas:
		e = event{corev1.EventTypeNormal, v1alpha1.ReasonTargetScaledDown, fmt.Sprintf(
			"%s was set to %d replicas after it was ready (minimum %d); the next signal wakes it", ref, state.Replicas, minReplicas)}
		setReady(metav1.ConditionFalse, e.reason, e.message)
		sr.Status.Phase = v1alpha1.PhaseIdle
	case wasReady && state.Current && state.ReadyReplicas < minReplicas:
		// A Warning: a workload that was serving has stopped, which its owner should look at,
		// and callers are held meanwhile.
		e = event{corev1.EventTypeWarning, v1alpha1.ReasonTargetNotReady, fmt.Sprintf(
			"%s has %d/%d ready replicas after it was ready; callers wait for them until %s, then the request fails with %s",
			ref, state.ReadyReplicas, minReplicas, now.Add(c.config.ReadyTimeout).UTC().Format(time.RFC3339), v1alpha1.ReasonReadyTimeout)}
		setReady(metav1.ConditionFalse, e.reason, e.message)
		sr.Status.Phase = v1alpha1.PhaseScaling
		recheck = c.config.ReadyTimeout
	case unready && state.ReadyFor(minReplicas):
		e = event{corev1.EventTypeNormal, v1alpha1.ReasonTargetReady, fmt.Sprintf(
			"%s has %d/%d ready replicas again", ref, state.ReadyReplicas, minReplicas)}
		setReady(metav1.ConditionTrue, e.reason, e.message)
		sr.Status.Phase = v1alpha1.PhaseReady
	case unready:
		lost := meta.FindStatusCondition(cached.Status.Conditions, v1alpha1.ConditionReady).LastTransitionTime.Time
		deadline := lost.Add(c.config.ReadyTimeout)
		if now.Before(deadline) {
			recheck = deadline.Sub(now)
			break
		}
		e = event{corev1.EventTypeWarning, v1alpha1.ReasonReadyTimeout, fmt.Sprintf(
			"%s did not have %d ready replicas again within %s of losing them (has %d ready of %d); giving up until the next signal",
			ref, minReplicas, c.config.ReadyTimeout, state.ReadyReplicas, state.Replicas)}
		setReady(metav1.ConditionFalse, e.reason, e.message)
		sr.Status.Phase = v1alpha1.PhaseFailed
	case cached.Status.Phase == v1alpha1.PhaseIdle && state.ReadyFor(minReplicas):
		e = event{corev1.EventTypeNormal, v1alpha1.ReasonTargetReady, fmt.Sprintf(
			"%s has %d/%d ready replicas again, scaled by something else", ref, state.ReadyReplicas, minReplicas)}
		setReady(metav1.ConditionTrue, e.reason, e.message)
		sr.Status.ReadyTime, sr.Status.ColdStartDuration = &metav1.Time{Time: now}, nil
		sr.Status.Phase = v1alpha1.PhaseReady
	default:
		return nil
	}
	sr.Status.Replicas, sr.Status.ReadyReplicas = state.Replicas, state.ReadyReplicas
	if err := c.writeStatus(ctx, cached, sr); err != nil {
		return err
	}
	if recheck > 0 {
		c.queue.AddAfter(key, recheck)
	}
	if e.reason != "" {
		klog.FromContext(ctx).V(2).Info("Settled request follows its target", "target", target.String(), "phase", sr.Status.Phase)
		c.recorder.Event(sr, e.kind, e.reason, e.message)
	}
	return nil
}

// targetLeft fails a followed request whose target the inventory no longer holds: it was
// deleted (TargetNotFound), or its owner removed the mark (NotOptedIn), after which the
// controller would not see it scaled down either. Only this path pays a /scale read, to tell
// the two apart. Like any request failed so, it is looked at again at once when the target is
// back in the inventory (its event), else once per window; a new signal is not needed.
func (c *Controller) targetLeft(ctx context.Context, key cache.ObjectName, cached *v1alpha1.ScaleRequest,
	target scaling.Target, resource schema.GroupVersionResource) error {
	sr := cached.DeepCopy()
	r := &reconciliation{c: c, sr: sr, now: c.clock.Now(), id: targetID(sr), key: key,
		scaledAfter: noObservation, readyAfter: noObservation}
	_, err := c.scaler.Current(ctx, target)
	switch {
	case err == nil && c.config.RequireOptIn:
		r.refuseNotOptedIn(target, resource)
	case err == nil:
		// Without opt-in the inventory holds every workload of the kind: it has not seen this
		// one's creation yet, and its event brings the request back.
		return nil
	case scaling.ReasonOf(err) == scaling.ReasonTargetNotFound:
		r.failScaled(v1alpha1.ReasonTargetNotFound, fmt.Sprintf("%s %s/%s was deleted after this request was served",
			target.Ref.APIVersion, target.Ref.Kind, target.Ref.Name))
		r.requeueAfter = c.config.RescaleDuration
	default:
		if err := r.scaleFailed(ctx, target, err); err != nil {
			return err
		}
	}
	sr.Status.Phase = phaseOf(sr)
	if err := c.writeStatus(ctx, cached, sr); err != nil {
		return err
	}
	r.report()
	switch {
	case r.recheckWithBackoff:
		c.queue.AddAfter(key, c.recheck.When(key))
	case r.requeueAfter > 0:
		c.queue.AddAfter(key, r.requeueAfter)
	}
	return nil
}

// queueLeftTargets queues, once at start-up, the followed requests whose target the inventory
// does not hold. A target deleted or unmarked while no controller ran sends no event, so
// nothing else would bring its request to followSettled; the requests whose targets the
// inventory does hold are queued by its first list. Lookup waits for each kind's cache.
func (c *Controller) queueLeftTargets(ctx context.Context) {
	if c.inventory == nil {
		return
	}
	for _, src := range c.sources {
		for _, obj := range src.indexer.List() {
			sr, ok := obj.(*v1alpha1.ScaleRequest)
			if !ok || !following(sr) {
				continue
			}
			target := targetOf(sr)
			gk, err := target.GroupKind()
			if err != nil || !c.config.AllowedKinds.Allows(gk) {
				continue
			}
			resource, err := c.scaler.Resolve(ctx, target)
			if err != nil {
				continue
			}
			entry, found, err := c.inventory.Lookup(ctx, gk, resource, target.Namespace, target.Ref.Name)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				continue
			}
			if !found || !entry.State.Exists {
				c.queue.Add(cache.MetaObjectToName(sr))
			}
		}
	}
}
