package controller

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/scaling"
)

// sync brings one ScaleRequest's latest signal forward: scale the target if the signal is new
// (or the target fell below the minimum while the request was active), follow the target until
// it is ready, and record each step in status. It returns an error only for failures a prompt
// retry may fix; everything else ends in status, an event and, where something outside may fix
// it, a re-check with a backoff capped at one rescale window.
func (c *Controller) sync(ctx context.Context, key cache.ObjectName) error {
	// This signal has had its first look, and its scale attempt unless something deferred or
	// failed it: if it was the last one to come, the status writes held for it may go. A
	// request whose attempt failed and is retried holds no one: otherwise one broken target
	// would delay every other request's Ready by up to a window.
	defer func() {
		for _, held := range c.scaleFirst.attempted(key) {
			c.queue.Add(held)
		}
	}()
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
		c.forgetRequest(key)
		return nil
	}
	// The informer may not have delivered the controller's own latest write yet.
	cached = c.writes.newest(cached)
	if settled(cached) {
		c.release(key)
		c.recheck.Forget(key)
		c.sightings.forget(key)
		return c.followSettled(ctx, key, cached)
	}

	sr := cached.DeepCopy()
	r := &reconciliation{c: c, sr: sr, now: c.clock.Now(), id: targetID(sr), key: key}
	c.sightings.saw(sr, r.now)
	if err := r.run(ctx); err != nil {
		// Transient: the queue's backoff retries; status waits for an outcome worth reporting.
		return err
	}
	if r.busy {
		// Another request's write to the same target is under way; its completion queues this
		// request again, which then finds the target up.
		return nil
	}
	if hold := r.statusHold(); hold > 0 {
		// Scale first, account later: other requests wait in the queue, and their scale writes
		// matter more than this request's status. The write's outcome is kept (outcomes) and
		// written when the target is ready (its inventory event queues the request), in one
		// status write instead of two, or once no other wake is under way, or at the latest
		// after a rescale window; once the target is ready, at most readyHoldLimit after the
		// controller saw it ready.
		c.queue.AddAfter(key, hold)
		return nil
	}
	if r.holdWrite {
		// The target was already up and its watch is listing it: one status write once the
		// watch answers says Ready at once, instead of Scaling now and Ready a moment later.
		c.queue.AddAfter(key, min(time.Second, c.config.RescaleDuration))
		return nil
	}
	sr.Status.Phase = phaseOf(sr)
	if err := c.writeStatus(ctx, cached, sr); err != nil {
		return err
	}
	// Status now carries the outcome of any scale write, so it is reported from here on.
	c.outcomes.forget(key)
	c.scaleFirst.unhold(key)
	if settled(sr) {
		c.sightings.forget(key)
		if c.sleeps != nil && sr.Status.Phase == v1alpha1.PhaseReady {
			// The follow path times its sleep, if its owner asked for one.
			c.queue.Add(key)
		}
	}
	r.report()
	if r.done || sr.Status.Phase == v1alpha1.PhaseFailed {
		// A failed request waits for a re-check or a new signal, not for its target's events:
		// its watch would only cost memory (and a refusal found before any watch-based check,
		// such as the target or its mark gone, must not leave one behind).
		c.release(key)
	}
	switch {
	case r.recheckWithBackoff:
		c.queue.AddAfter(key, c.recheck.When(key))
	case r.requeueAfter > 0:
		c.recheck.Forget(key)
		c.queue.AddAfter(key, r.requeueAfter)
	default:
		c.recheck.Forget(key)
	}
	return nil
}

// servedSignal reports whether the request's latest signal already had its scale write (Scaled
// is True for its generation).
func servedSignal(sr *v1alpha1.ScaleRequest) bool {
	cond := meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionScaled)
	return cond != nil && cond.Status == metav1.ConditionTrue && cond.ObservedGeneration == sr.Generation
}

// forgetRequest drops everything kept for a request that no longer exists.
func (c *Controller) forgetRequest(key cache.ObjectName) {
	c.writes.forget(key)
	c.outcomes.forget(key)
	c.sightings.forget(key)
	c.recheck.Forget(key)
	c.release(key)
	if c.sleeps != nil {
		c.sleeps.mu.Lock()
		delete(c.sleeps.slept, key)
		c.sleeps.mu.Unlock()
	}
}

// settled reports whether the latest signal needs no more scaling work: it is Ready or Idle, it
// lost its ready replicas after it was Ready, or it failed in a way only a new signal (a spec
// change) can change. All but the failed ones still follow their target through the inventory
// (followSettled), which costs no API call.
func settled(sr *v1alpha1.ScaleRequest) bool {
	if sr.Status.ObservedGeneration != sr.Generation {
		return false
	}
	switch sr.Status.Phase {
	case v1alpha1.PhaseReady, v1alpha1.PhaseIdle, v1alpha1.PhaseDraining, v1alpha1.PhaseAsleep:
		return true
	case v1alpha1.PhaseScaling:
		return lostReadiness(sr)
	case v1alpha1.PhaseFailed:
		return finalFailure(sr)
	}
	return false
}

// finalFailure reports whether a Failed request failed for good: its kind has no /scale, or
// its target did not become ready in time. Everything else is re-checked.
func finalFailure(sr *v1alpha1.ScaleRequest) bool {
	scaled := meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionScaled)
	ready := meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionReady)
	return (scaled != nil && scaled.Reason == v1alpha1.ReasonNoScaleSubresource) ||
		(ready != nil && ready.Reason == v1alpha1.ReasonReadyTimeout)
}

type event struct{ kind, reason, message string }

// reconciliation is one pass of sync over a private copy of a ScaleRequest. What it counts and
// announces (metrics, events) is reported only once its status write succeeded, so a retried
// sync neither counts an outcome twice nor announces what status does not say.
type reconciliation struct {
	c   *Controller
	sr  *v1alpha1.ScaleRequest
	now time.Time
	id  string
	key cache.ObjectName

	events       []event
	outcomes     []string // zerowake_scale_total reasons, one per change of the Scaled condition
	scaledAfter  time.Duration
	readyAfter   time.Duration
	requeueAfter time.Duration
	// recheckWithBackoff is set for failures nothing watched announces the end of (RBAC granted,
	// a policy changed, an authorizer warmed up): re-checked after 1s, 2s, 4s… capped at one
	// rescale window.
	recheckWithBackoff bool
	// done is set when the request no longer needs its target watched.
	done bool
	// busy is set when another worker's write to the same target is under way.
	busy bool
	// holdWrite is set when the status write should wait for the target watch's first answer.
	holdWrite bool
	// writtenAt is when the scale write this pass reports was made, if its status write is
	// still to come and may wait (a first scale, not a fight's, which is reported at once).
	writtenAt time.Time
	// readySeenAt is when the controller first saw the target ready for this signal, if this
	// pass found it ready.
	readySeenAt time.Time
	// sleepOutcome is set when this signal came to a Draining request (abortSignal) or an
	// Asleep one ("woken"), to be counted once its status is written.
	sleepOutcome string
}

// statusHold returns how long the status write of a scale write may still wait (0: write it
// now), never past a rescale window from the write, nor once the controller is stopping, nor
// for a failure. In a burst (other requests queued or other targets waking) it waits for this
// target's readiness, so that one write says both; a single wake is written at once. Readiness
// itself waits only while other requests' scale writes are still to come: those are what
// resolvers wait for, and the last of them releases it (firstScales). Resolvers wait for the
// Ready write too, so under a steady stream of new signals, where a last one never comes, it
// waits at most readyHoldLimit from the moment the target was seen ready.
func (r *reconciliation) statusHold() time.Duration {
	if r.writtenAt.IsZero() || r.c.queue.ShuttingDown() || !r.scaledNow() || phaseOf(r.sr) == v1alpha1.PhaseFailed {
		return 0
	}
	left := max(r.writtenAt.Add(r.c.config.RescaleDuration).Sub(r.now), 0)
	switch {
	case left == 0:
		return 0
	case r.done:
		seen := r.readySeenAt
		if seen.IsZero() {
			seen = r.now
		}
		wait := min(left, seen.Add(readyHoldLimit).Sub(r.now))
		if wait > 0 && r.c.scaleFirst.hold(r.key) {
			return wait
		}
		return 0
	case r.c.queue.Len() == 0 && r.c.Active() <= 1:
		return 0
	}
	return left
}

// report records the pass's metrics and events, after its status write.
func (r *reconciliation) report() {
	m := r.c.metrics
	for _, reason := range r.outcomes {
		m.scales.WithLabelValues(reason).Inc()
	}
	if r.scaledAfter != noObservation {
		m.wakeToScaled.Observe(r.scaledAfter.Seconds())
	}
	if r.readyAfter != noObservation {
		m.wakeToReady.Observe(r.readyAfter.Seconds())
	}
	for _, e := range r.events {
		r.c.recorder.Event(r.sr, e.kind, e.reason, e.message)
	}
	switch r.sleepOutcome {
	case "":
	case abortSignal:
		m.sleepAborted.WithLabelValues(abortSignal).Inc()
	default:
		m.wakesFromSleep.Inc()
	}
	r.sleepOutcome = ""
}

// noObservation marks a histogram with nothing to observe in this pass.
const noObservation = time.Duration(-1)

func (r *reconciliation) run(ctx context.Context) error {
	r.scaledAfter, r.readyAfter = noObservation, noObservation
	sr, status := r.sr, &r.sr.Status
	if status.ObservedGeneration != sr.Generation {
		r.leaveSleep(sr.Status.Phase)
	}
	status.ObservedGeneration = sr.Generation
	if ready := meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionReady); ready != nil &&
		(ready.ObservedGeneration != sr.Generation || ready.Status == metav1.ConditionTrue) {
		// A new signal: readiness, its deadline and the cold start are measured afresh. So are
		// they when Ready is true for this signal but the request is not settled: that is not
		// this controller's finding (someone else wrote the status), and would read as Ready
		// while a scale waits.
		meta.RemoveStatusCondition(&status.Conditions, v1alpha1.ConditionReady)
		status.ReadyTime, status.ColdStartDuration = nil, nil
	}
	minReplicas := max(sr.Spec.MinReplicas, 1)
	target := targetOf(sr)

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
	if permitted, err := r.ownerPermits(ctx, target, gk, minReplicas); err != nil || !permitted {
		return err
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

	startedWatch := !r.c.holds(r.key)
	switch {
	case !served || fight:
		if err := r.scale(ctx, target, minReplicas, fight, state); err != nil || r.busy {
			return err
		}
		if !r.scaledNow() && !r.fightDeferred() {
			return nil // deferred by the window, or failed
		}
		state, seen = r.c.watcher.State(r.id)
	case startedWatch:
		// Served, but not by this process: its predecessor crashed or lost the lease between
		// the scale and readiness. Without a watch here, readiness would never arrive.
		if err := r.follow(ctx, target); err != nil || !r.scaledNow() {
			return err
		}
		state, seen = r.c.watcher.State(r.id)
	}
	if startedWatch && !seen && r.scaledReason() == v1alpha1.ReasonAlreadyScaled {
		r.holdWrite = true
		return nil
	}
	r.followReadiness(minReplicas, state, seen)
	return nil
}

// ownerPermits checks that the target's owner opted in to waking by ScaleRequests, and that
// minReplicas is within the cap the owner set. It reads the inventory's cache, so the wake path
// pays no API call for it. A refusal is recorded and re-checked when the target's marks change.
func (r *reconciliation) ownerPermits(ctx context.Context, target scaling.Target, gk schema.GroupKind, minReplicas int32) (bool, error) {
	inv := r.c.inventory
	if inv == nil || !r.c.config.RequireOptIn {
		return true, nil
	}
	resource, err := r.c.scaler.Resolve(ctx, target)
	if err != nil {
		return false, r.scaleFailed(ctx, target, err)
	}
	entry, found, err := inv.Lookup(ctx, gk, resource, target.Namespace, target.Ref.Name)
	if err != nil {
		return false, err
	}
	ref := target.Ref.Kind + "/" + target.Ref.Name
	if !found {
		// Not marked, or not there at all: only the failure path pays a read to tell which.
		if _, err := r.c.scaler.Current(ctx, target); err != nil {
			return false, r.scaleFailed(ctx, target, err)
		}
		r.refuseNotOptedIn(target, resource)
		return false, nil
	}
	raw, ok := entry.Annotations[v1alpha1.AnnotationMaxReplicas]
	if !ok && r.c.config.DefaultMaxReplicas > 0 && minReplicas > r.c.config.DefaultMaxReplicas {
		// Waking brings a workload from zero to serving; more is an autoscaler's job, unless
		// the owner says otherwise.
		r.failScaled(v1alpha1.ReasonAboveOwnerCap, fmt.Sprintf(
			"minReplicas %d is above the %d a wake may ask for when the owner of %s sets no cap (the controller's --default-max-replicas); its owner can raise it with: kubectl annotate %s %s -n %s %s=%d",
			minReplicas, r.c.config.DefaultMaxReplicas, ref, resource.GroupResource().String(), target.Ref.Name, target.Namespace,
			v1alpha1.AnnotationMaxReplicas, minReplicas))
		r.requeueAfter = r.c.config.RescaleDuration
		return false, nil
	}
	if ok {
		capReplicas, err := strconv.ParseInt(raw, 10, 32)
		switch {
		case err != nil || capReplicas < 1:
			r.failScaled(v1alpha1.ReasonAboveOwnerCap, fmt.Sprintf(
				"%s has annotation %s=%q, which is not a positive integer; its owner must fix it before it can be woken",
				ref, v1alpha1.AnnotationMaxReplicas, raw))
			r.requeueAfter = r.c.config.RescaleDuration
			return false, nil
		case int64(minReplicas) > capReplicas:
			r.failScaled(v1alpha1.ReasonAboveOwnerCap, fmt.Sprintf(
				"minReplicas %d is above the %d its owner allows a wake to ask for (annotation %s on %s)",
				minReplicas, capReplicas, v1alpha1.AnnotationMaxReplicas, ref))
			r.requeueAfter = r.c.config.RescaleDuration
			return false, nil
		}
	}
	return true, nil
}

// refuseNotOptedIn fails the request because the target's owner has not marked it as
// wakeable, or no longer does. The mark's inventory event brings the request back; the window's
// re-check is the fallback.
func (r *reconciliation) refuseNotOptedIn(target scaling.Target, resource schema.GroupVersionResource) {
	r.failScaled(v1alpha1.ReasonNotOptedIn, fmt.Sprintf(
		"%s/%s has not opted in to being woken by ScaleRequests; its owner can allow it with: kubectl label %s %s -n %s %s=true",
		target.Ref.Kind, target.Ref.Name, resource.GroupResource().String(), target.Ref.Name, target.Namespace, v1alpha1.LabelWake))
	r.requeueAfter = r.c.config.RescaleDuration
}

// follow starts watching a target that was scaled for the current signal before this process
// took the request over.
func (r *reconciliation) follow(ctx context.Context, target scaling.Target) error {
	current, err := r.c.scaler.Current(ctx, target)
	if err != nil {
		return r.scaleFailed(ctx, target, err)
	}
	r.c.watcher.Watch(context.WithoutCancel(ctx), r.id, current.Resource, r.sr.Namespace, target.Ref.Name, current.ResourceVersion)
	r.c.hold(r.key, r.id)
	return nil
}

// scaledNow reports whether Scaled is True for the current generation.
func (r *reconciliation) scaledNow() bool { return servedSignal(r.sr) }

// fightDeferred reports whether a fight's re-scale waits for the window: the request was served
// for this signal, so its readiness deadline still runs.
func (r *reconciliation) fightDeferred() bool {
	cond := meta.FindStatusCondition(r.sr.Status.Conditions, v1alpha1.ConditionScaled)
	return cond != nil && cond.Status == metav1.ConditionFalse && cond.Reason == v1alpha1.ReasonScaleFight &&
		cond.ObservedGeneration == r.sr.Generation
}

// scaledReason is the Scaled condition's reason for the current generation, or "".
func (r *reconciliation) scaledReason() string {
	cond := meta.FindStatusCondition(r.sr.Status.Conditions, v1alpha1.ConditionScaled)
	if cond == nil || cond.ObservedGeneration != r.sr.Generation {
		return ""
	}
	return cond.Reason
}

// scale raises the target, unless the rescale window defers it.
func (r *reconciliation) scale(ctx context.Context, target scaling.Target, minReplicas int32, fight bool, state scaling.TargetState) error {
	status := &r.sr.Status
	logger := klog.FromContext(ctx)

	// A write whose status write failed is reported as it was, not found again as "already up".
	if o, ok := r.c.outcomes.get(r.key, r.sr.UID, r.sr.Generation); ok {
		if !o.fight {
			r.writtenAt = o.writtenAt
		}
		return r.scaled(ctx, target, minReplicas, o.fight, o.result, o.writtenAt, false, o.unknownWriteTime)
	}

	var persisted time.Time
	if status.LastScaleTime != nil {
		persisted = status.LastScaleTime.Time
	}
	res := r.c.window.reserve(r.id, persisted, r.now)
	if res.busy {
		r.busy = true
		return nil
	}
	if res.wait > 0 && !fight {
		// The window limits writes, not signals: a target that is already up needs no write.
		current, err := r.c.scaler.Current(ctx, target)
		if err != nil {
			return r.scaleFailed(ctx, target, err)
		}
		if current.Replicas >= minReplicas {
			r.c.outcomes.put(r.key, scaleOutcome{uid: r.sr.UID, generation: r.sr.Generation, result: current})
			return r.scaled(ctx, target, minReplicas, false, current, time.Time{}, false, false)
		}
	}
	if res.wait > 0 {
		// The message names when, not how long: it must not change from one sync to the next
		// within the window, or every event from the target would cost a status write.
		reason, message := v1alpha1.ReasonRescaleWindow, fmt.Sprintf(
			"%s/%s was scaled less than %s ago; scaling again at %s", target.Ref.Kind, target.Ref.Name,
			r.c.config.RescaleDuration, r.now.Add(res.wait).UTC().Format("2006-01-02T15:04:05.000Z07:00"))
		if fight {
			reason = v1alpha1.ReasonScaleFight
			message = fmt.Sprintf("%s/%s was set to %d replicas by something else while this request was active; %s",
				target.Ref.Kind, target.Ref.Name, state.Replicas, message)
			if cond := meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionScaled); cond == nil || cond.Reason != reason {
				r.events = append(r.events, event{corev1.EventTypeWarning, reason, message})
			}
		}
		r.setCondition(v1alpha1.ConditionScaled, metav1.ConditionFalse, reason, message)
		logger.V(2).Info("Scale deferred by the rescale window", "target", target.String(), "wait", res.wait)
		r.requeueAfter = res.wait
		return nil
	}

	// This worker holds the target's reservation: end it whatever happens, and let the other
	// requests naming the target look again.
	var writtenAt time.Time
	unknownWriteTime := false
	defer func() {
		r.c.window.complete(r.id, writtenAt)
		r.c.enqueueTargetExcept(r.id, r.key)
	}()
	result, err := r.c.scaler.ScaleUp(ctx, target, minReplicas)
	if err != nil {
		return r.scaleFailed(ctx, target, err)
	}
	switch {
	case result.Scaled:
		// The window runs from the write's answer, not from the start of the sync: time spent
		// before the write (a slow API server, a busy node) must not shorten the gap to the next.
		writtenAt = r.c.clock.Now()
	case !fight:
		// Up, and this process knows no write to it within a window (it holds the reservation).
		if at, ok := r.unrecordedWrite(ctx, target, result); ok {
			logger.Info("Target was scaled from zero for this signal by this controller before it restarted; recording that write",
				"target", target.String(), "scaledAt", at)
			result.Scaled, result.PreviousReplicas = true, 0
			// When the API server does not say when, the window runs from now: later than the
			// write, so never shorter than a window between two writes.
			writtenAt = at
			if writtenAt.IsZero() {
				writtenAt, unknownWriteTime = r.c.clock.Now(), true
			}
		}
	}
	// Kept until a status write carries it, also when nothing was written: a pass that waits
	// for the target watch's first answer before writing status must not ask /scale again.
	r.c.outcomes.put(r.key, scaleOutcome{uid: r.sr.UID, generation: r.sr.Generation, result: result, fight: fight, writtenAt: writtenAt, unknownWriteTime: unknownWriteTime})
	if !fight {
		r.writtenAt = writtenAt
	}
	return r.scaled(ctx, target, minReplicas, fight, result, writtenAt, result.Scaled && !unknownWriteTime, unknownWriteTime)
}

// unrecordedWrite finds a scale write from zero that this controller made for the current
// signal but never recorded: the process that made it died (SIGKILL, a lost lease) while its
// status write was held (scale first), so the request says nothing of it and the target is up.
// The target itself records, in its managed fields, that the controller's from-zero write last
// changed its replicas: nobody has changed them since, or the record would be someone else's.
// It returns when the write was made if the API server recorded that (zero otherwise).
//
// The record is this signal's write unless an earlier one accounts for it: a write status
// already records (lastScaleTime) while the target has not been seen down since (the request
// is not Idle), or another request naming the same target that records its own scale and is
// not Idle. A target that went down since such a write was set to zero by someone else, which
// takes the record from this controller, so a record found then is a newer write. When the API
// server keeps the write's time, it must also be in or after the second of the signal. Only a
// write from zero is recognised: the record does not say what a raise from a higher count
// started from, so such a target is reported AlreadyScaled, as before. This costs one read, on
// a path the normal wake never takes (the request not Scaled for its signal, the target up).
func (r *reconciliation) unrecordedWrite(ctx context.Context, target scaling.Target, result scaling.Result) (time.Time, bool) {
	write, found, err := r.c.scaler.LastWrite(ctx, target, result.Resource)
	if err != nil {
		klog.FromContext(ctx).V(2).Info("Could not read the target's record of scale writes", "target", target.String(), "err", err)
		return time.Time{}, false
	}
	if !found || !write.FromZero {
		return time.Time{}, false
	}
	if !write.At.IsZero() && !write.At.Add(time.Second).After(requestedTime(r.sr)) {
		return time.Time{}, false
	}
	if accountsFor(r.sr, r.sr.Generation) {
		return time.Time{}, false
	}
	for _, other := range r.c.requestsFor(r.id) {
		if other.UID != r.sr.UID && accountsFor(other, -1) {
			return time.Time{}, false
		}
	}
	return write.At, true
}

// accountsFor reports whether sr records a scale write of a signal other than generation
// (-1: any) whose target has not been seen down since.
func accountsFor(sr *v1alpha1.ScaleRequest, generation int64) bool {
	scaled := meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionScaled)
	if scaled == nil || scaled.Status != metav1.ConditionTrue || scaled.ObservedGeneration == generation {
		return false
	}
	switch scaled.Reason {
	case v1alpha1.ReasonScaledFromZero, v1alpha1.ReasonScaledUp, v1alpha1.ReasonScaleFight:
	default:
		return false
	}
	return sr.Status.Phase != v1alpha1.PhaseIdle
}

// scaled records the outcome of a scale write made at writtenAt (or, with a zero writtenAt, of
// finding the target already scaled) and starts following the target's readiness. wroteNow is
// set when the write was made by this pass, rather than recalled from one whose status write
// failed.
//
// With unknownWriteTime set, the write is a predecessor's whose time the API server did not
// record (unrecordedWrite): lastScaleTime and the signal-to-scaled time are left unsaid rather
// than made up; the cold start, which runs from the signal to readiness, is still recorded.
func (r *reconciliation) scaled(ctx context.Context, target scaling.Target, minReplicas int32, fight bool, result scaling.Result, writtenAt time.Time, wroteNow, unknownWriteTime bool) error {
	sr, status := r.sr, &r.sr.Status
	logger := klog.FromContext(ctx)
	if wroteNow {
		// Follow the target afresh, seeing only states from this write on: an event still in
		// flight from before it would look like the target falling back below minimum.
		r.c.watcher.Forget(r.id)
	}
	// Without a write too, only states at or after the answer read count: a cache behind it
	// can still show pods that are gone since (a sleep's), ready, on a target that something
	// else has just raised from zero.
	after := result.ResourceVersion
	r.c.watcher.Watch(context.WithoutCancel(ctx), r.id, result.Resource, sr.Namespace, target.Ref.Name, after)
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
	if unknownWriteTime {
		message += " (by this controller before it restarted, unrecorded; the API server keeps no time for it)"
	}
	if result.Scaled {
		if unknownWriteTime {
			// A lastScaleTime left from an earlier write would read as this one's.
			status.LastScaleTime = nil
		} else {
			status.LastScaleTime = &metav1.Time{Time: writtenAt}
		}
		if !fight {
			r.events = append(r.events, event{corev1.EventTypeNormal, reason, message})
			if !unknownWriteTime {
				r.scaledAfter = nonNegative(writtenAt.Sub(r.signalTime()))
			}
		}
		if wroteNow {
			logger.Info("Scaled target", "target", target.String(), "from", previous, "to", result.Replicas)
		}
	}
	r.setCondition(v1alpha1.ConditionScaled, metav1.ConditionTrue, reason, message)
	return nil
}

// scaleFailed records a failed scale. Failures that someone else may fix (a target created
// later, a CRD installed, RBAC granted, a policy changed) are re-checked with a backoff capped at
// one rescale window; transient ones go back to the queue's own backoff.
func (r *reconciliation) scaleFailed(ctx context.Context, target scaling.Target, err error) error {
	reason := scaling.ReasonOf(err)
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
		message = fmt.Sprintf("the controller is not allowed to scale %s: %v", ref, apiMessage(err))
	case scaling.ReasonRejected:
		message = fmt.Sprintf("the API server refused to scale %s: %v", ref, apiMessage(err))
	default:
		klog.FromContext(ctx).V(2).Info("Scale failed, will retry", "target", target.String(), "err", err)
		return err
	}
	r.failScaled(string(reason), message)
	switch reason {
	case scaling.ReasonNoScaleSubresource:
		r.done = true
	case scaling.ReasonForbidden, scaling.ReasonRejected:
		// Nothing the controller watches tells when RBAC or a policy changes, and a
		// just-restarted API server answers 403 until its authorizer is warm: look again soon.
		r.recheckWithBackoff = true
	default:
		// A target created, or marked, shows up in the inventory, whose event queues the
		// request at once; the window's re-check is the fallback, and keeps a burst of bad
		// requests from hammering the API server.
		r.requeueAfter = r.c.config.RescaleDuration
	}
	return nil
}

// apiMessage is the API server's own message for err, without the wrapping of the layers below.
func apiMessage(err error) string {
	var status apierrors.APIStatus
	if errors.As(err, &status) && status.Status().Message != "" {
		return status.Status().Message
	}
	return err.Error()
}

// followReadiness updates replicas and readiness from the target watch, and fails the request
// when the target does not become ready in time. The deadline runs from the controller's own
// observation: the moment it started waiting for this signal's readiness (the Ready condition
// turning False with WaitingForReplicas, which a fight's re-scale does not move), never from a
// client's clock. A target the watch has not listed yet is never timed out.
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
			r.markReady(minReplicas, state)
			r.done = true
			return
		}
	}
	r.c.outcomes.notReady(r.key)

	waitingSince := r.now
	if cond := meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionReady); cond != nil &&
		cond.ObservedGeneration == sr.Generation && cond.Reason == v1alpha1.ReasonWaitingForReplicas {
		waitingSince = cond.LastTransitionTime.Time
	}
	deadline := waitingSince.Add(r.c.config.ReadyTimeout)
	if seen && !r.now.Before(deadline) {
		message := fmt.Sprintf("%s did not get %d ready replicas within %s of being scaled (has %d ready of %d)",
			ref, minReplicas, r.c.config.ReadyTimeout, state.ReadyReplicas, state.Replicas)
		if r.fightDeferred() || state.Replicas < minReplicas {
			message = fmt.Sprintf("%s did not keep %d replicas within %s of being scaled: something else keeps setting it lower (now %d); giving up until the next signal",
				ref, minReplicas, r.c.config.ReadyTimeout, state.Replicas)
		}
		r.setCondition(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonReadyTimeout, message)
		r.events = append(r.events, event{corev1.EventTypeWarning, v1alpha1.ReasonReadyTimeout, message})
		r.done = true
		r.requeueAfter = 0
		return
	}
	r.setCondition(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonWaitingForReplicas,
		fmt.Sprintf("waiting for %s to have %d ready replicas", ref, minReplicas))
	// Readiness arrives as watch events; this re-check is the fallback, and the timeout's alarm.
	next := min(r.c.config.RescaleDuration, max(deadline.Sub(r.now), time.Millisecond))
	if r.requeueAfter == 0 || next < r.requeueAfter {
		r.requeueAfter = next
	}
}

// markReady records that the target has its minimum ready. A cold start is recorded only when
// this controller scaled the target up for this signal: a target that was already up did not
// start cold. readyTime, the cold start and the condition's transition are the moment the
// controller first saw the target ready, which is earlier than this pass when its status write
// was held (scale first).
func (r *reconciliation) markReady(minReplicas int32, state scaling.TargetState) {
	sr, status := r.sr, &r.sr.Status
	ref := sr.Spec.ScaleTargetRef.Kind + "/" + sr.Spec.ScaleTargetRef.Name
	seen := r.c.outcomes.sawReady(r.key, sr.UID, sr.Generation, r.now)
	r.readySeenAt = seen
	status.ReadyTime = &metav1.Time{Time: seen}
	message := fmt.Sprintf("%s has %d/%d ready replicas", ref, state.ReadyReplicas, minReplicas)
	switch r.scaledReason() {
	case v1alpha1.ReasonScaledFromZero, v1alpha1.ReasonScaledUp, v1alpha1.ReasonScaleFight:
		coldStart := nonNegative(seen.Sub(r.signalTime())).Round(time.Millisecond)
		status.ColdStartDuration = &metav1.Duration{Duration: coldStart}
		message += fmt.Sprintf(", %s after the signal", coldStart)
		r.readyAfter = coldStart
	default:
		status.ColdStartDuration = nil
	}
	r.setConditionAt(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonTargetReady, message, seen)
	r.events = append(r.events, event{corev1.EventTypeNormal, v1alpha1.ReasonTargetReady, message})
}

// failScaled sets Scaled=False with a failure reason; readiness no longer applies.
func (r *reconciliation) failScaled(reason, message string) {
	meta.RemoveStatusCondition(&r.sr.Status.Conditions, v1alpha1.ConditionReady)
	r.setCondition(v1alpha1.ConditionScaled, metav1.ConditionFalse, reason, message)
}

// setCondition sets a condition for the current generation. A Scaled condition that changes
// (status, reason or signal) counts one scale outcome; one that newly turns to a failure also
// queues a Warning event.
func (r *reconciliation) setCondition(conditionType string, status metav1.ConditionStatus, reason, message string) {
	r.setConditionAt(conditionType, status, reason, message, r.now)
}

// setConditionAt is setCondition for a change the controller saw at a moment before this pass.
func (r *reconciliation) setConditionAt(conditionType string, status metav1.ConditionStatus, reason, message string, at time.Time) {
	conditions := &r.sr.Status.Conditions
	previous := meta.FindStatusCondition(*conditions, conditionType)
	isNew := previous == nil || previous.Reason != reason || previous.Status != status || previous.ObservedGeneration != r.sr.Generation
	meta.SetStatusCondition(conditions, metav1.Condition{
		Type: conditionType, Status: status, Reason: reason, Message: message,
		ObservedGeneration: r.sr.Generation, LastTransitionTime: metav1.Time{Time: at},
	})
	if !isNew {
		return
	}
	if conditionType == v1alpha1.ConditionScaled {
		r.outcomes = append(r.outcomes, reason)
	}
	if status == metav1.ConditionFalse && isFailure(reason) {
		r.events = append(r.events, event{corev1.EventTypeWarning, reason, message})
	}
}

// isFailure reports whether a Scaled reason means the request cannot be served as it stands.
func isFailure(reason string) bool {
	switch reason {
	case v1alpha1.ReasonTargetNotFound, v1alpha1.ReasonKindUnknown, v1alpha1.ReasonNoScaleSubresource,
		v1alpha1.ReasonKindNotAllowed, v1alpha1.ReasonForbidden, v1alpha1.ReasonRejected,
		v1alpha1.ReasonNotOptedIn, v1alpha1.ReasonAboveOwnerCap:
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
	case ready != nil && ready.Reason == v1alpha1.ReasonTargetScaledDown:
		return v1alpha1.PhaseIdle
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

func nonNegative(d time.Duration) time.Duration { return max(d, 0) }
