package controller

import (
	"context"
	"fmt"

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

// followSettled keeps a Ready or Idle request truthful from the inventory's cache, at no API
// cost: a Ready request whose target something set below its minimum (an idler, a GitOps
// revert) becomes Idle, so that nobody is told Ready while the target has no pods; an Idle
// request whose target has its minimum ready again becomes Ready. Targets the inventory does
// not hold (not marked, or gone) are left as they were last seen.
func (c *Controller) followSettled(ctx context.Context, key cache.ObjectName, cached *v1alpha1.ScaleRequest) error {
	if c.inventory == nil || (cached.Status.Phase != v1alpha1.PhaseReady && cached.Status.Phase != v1alpha1.PhaseIdle) {
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
	entry, found, err := c.inventory.Lookup(ctx, gk, resource, target.Namespace, target.Ref.Name)
	if err != nil || !found || !entry.State.Exists {
		return err
	}
	state := entry.State
	minReplicas := max(cached.Spec.MinReplicas, 1)
	ref := target.Ref.Kind + "/" + target.Ref.Name
	now := c.clock.Now()
	sr := cached.DeepCopy()
	var e event
	switch {
	case cached.Status.Phase == v1alpha1.PhaseReady && state.Replicas < minReplicas:
		e = event{corev1.EventTypeNormal, v1alpha1.ReasonTargetScaledDown, fmt.Sprintf(
			"%s was set to %d replicas after it was ready (minimum %d); the next signal wakes it", ref, state.Replicas, minReplicas)}
		meta.SetStatusCondition(&sr.Status.Conditions, metav1.Condition{
			Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: e.reason, Message: e.message,
			ObservedGeneration: sr.Generation, LastTransitionTime: metav1.Time{Time: now},
		})
		sr.Status.Phase = v1alpha1.PhaseIdle
	case cached.Status.Phase == v1alpha1.PhaseIdle && state.ReadyFor(minReplicas):
		e = event{corev1.EventTypeNormal, v1alpha1.ReasonTargetReady, fmt.Sprintf(
			"%s has %d/%d ready replicas again, scaled by something else", ref, state.ReadyReplicas, minReplicas)}
		meta.SetStatusCondition(&sr.Status.Conditions, metav1.Condition{
			Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: e.reason, Message: e.message,
			ObservedGeneration: sr.Generation, LastTransitionTime: metav1.Time{Time: now},
		})
		sr.Status.ReadyTime, sr.Status.ColdStartDuration = &metav1.Time{Time: now}, nil
		sr.Status.Phase = v1alpha1.PhaseReady
	default:
		return nil
	}
	sr.Status.Replicas, sr.Status.ReadyReplicas = state.Replicas, state.ReadyReplicas
	if err := c.writeStatus(ctx, cached, sr); err != nil {
		return err
	}
	klog.FromContext(ctx).V(2).Info("Settled request follows its target", "target", target.String(), "phase", sr.Status.Phase)
	c.recorder.Event(sr, e.kind, e.reason, e.message)
	return nil
}
