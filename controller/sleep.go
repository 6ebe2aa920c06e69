package controller

import (
	"context"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationclient "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/zerowake/zerowake/activity"
	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/scaling"
)

// SleepConfig turns on sleeping: targets whose owners set zerowake.dev/idle-after are scaled to
// zero once idle that long. It needs Config.Inventory (which must keep that annotation).
type SleepConfig struct {
	// Leases creates and updates the targets' activity Leases.
	Leases coordinationclient.LeasesGetter
	// Activity is an informer of the activity Leases (label zerowake.dev/activity=true) in the
	// namespaces the controller serves.
	Activity cache.SharedIndexInformer
	// Members is an informer of the gates' membership Leases (label zerowake.dev/gate-member=true).
	Members cache.SharedIndexInformer
	// MinIdleAfter is the shortest idle-after accepted.
	MinIdleAfter time.Duration
}

// DefaultMinIdleAfter is the shortest idle-after an owner may ask for.
const DefaultMinIdleAfter = 30 * time.Second

// maxOverrides sleeps undone by something else scaling the target up, within overrideWindow,
// make the controller stop putting the target to sleep: it does not fight an HPA's minimum or a
// GitOps tool for ever.
const (
	maxOverrides   = 3
	overrideWindow = time.Hour
)

// drainPoll is the fallback re-check of a drain waiting for gates' acknowledgements; their
// membership Leases' events normally bring it sooner.
const drainPoll = time.Second

// Sleeper lowers an idle target to zero, guarded by the resourceVersion its /scale had when the
// controller decided; *scaling.ScaleHandler implements it.
type Sleeper interface {
	ScaleToZero(ctx context.Context, target scaling.Target, resourceVersion string) (scaling.Result, error)
}

// sleepDecision is what the controller knew when it decided to put a target to sleep.
type sleepDecision struct {
	since    time.Time // status.drainingSince
	scaleRV  string    // the target's /scale resourceVersion then
	replicas int32
	lease    string // namespace/name of the activity Lease
}

// sleeps holds the controller's observations for sleeping: when it saw each activity Lease and
// each gate's membership change, on its own clock, and the drains under way.
type sleeps struct {
	config    SleepConfig
	startedAt time.Time

	mu sync.Mutex
	// activitySeen maps an activity Lease (namespace/name) to when its renewTime last changed.
	activitySeen map[string]time.Time
	// members maps a membership Lease (namespace/name) to the version the controller last saw
	// and when it first saw it.
	members   map[string]memberSeen
	decisions map[cache.ObjectName]sleepDecision
	// overrides lists, per target id, when a sleep of it was undone by something else.
	overrides map[string][]time.Time
	// stopped maps a target id to the idle-after value for which the controller gave up.
	stopped map[string]string
	// slept maps an Asleep request to its target's resourceVersion after the controller's scale
	// to zero: until the cache holds that, it shows the target as it was before, ready.
	slept map[cache.ObjectName]string
}

// startSleeping wires the sleep informers' events into the controller.
func (c *Controller) startSleeping() error {
	cfg := c.config.Sleep
	if cfg == nil {
		return nil
	}
	if cfg.MinIdleAfter <= 0 {
		cfg.MinIdleAfter = DefaultMinIdleAfter
	}
	c.sleeps = &sleeps{
		config: *cfg, startedAt: c.clock.Now(),
		activitySeen: map[string]time.Time{}, members: map[string]memberSeen{},
		decisions: map[cache.ObjectName]sleepDecision{}, overrides: map[string][]time.Time{}, stopped: map[string]string{},
		slept: map[cache.ObjectName]string{},
	}
	s := c.sleeps
	if _, err := cfg.Activity.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if l, ok := obj.(*coordinationv1.Lease); ok {
				s.sawActivity(l, c.clock.Now())
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*coordinationv1.Lease)
			n, ok2 := newObj.(*coordinationv1.Lease)
			if ok1 && ok2 && !o.Spec.RenewTime.Equal(n.Spec.RenewTime) {
				s.sawActivity(n, c.clock.Now())
				c.queueDrainsOf(n.Namespace + "/" + n.Name)
			}
		},
	}); err != nil {
		return err
	}
	_, err := cfg.Members.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { c.sawMember(obj) },
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*coordinationv1.Lease)
			n, ok2 := newObj.(*coordinationv1.Lease)
			if ok1 && ok2 && o.ResourceVersion != n.ResourceVersion {
				c.sawMember(n)
			}
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if l, ok := obj.(*coordinationv1.Lease); ok {
				s.mu.Lock()
				delete(s.members, l.Namespace+"/"+l.Name)
				s.mu.Unlock()
				c.queueDrainsOf("")
			}
		},
	})
	return err
}

func (s *sleeps) sawActivity(l *coordinationv1.Lease, now time.Time) {
	s.mu.Lock()
	s.activitySeen[l.Namespace+"/"+l.Name] = now
	s.mu.Unlock()
}

// memberSeen is a membership Lease's version (its resourceVersion and renewTime) and when the
// controller first saw it.
type memberSeen struct {
	version string
	at      time.Time
}

func (c *Controller) sawMember(obj any) {
	l, ok := obj.(*coordinationv1.Lease)
	if !ok {
		return
	}
	c.sleeps.memberSeenAt(l, c.clock.Now())
	c.queueDrainsOf("")
}

// memberSeenAt returns when the controller first saw the Lease at its current version, noting
// now if this is the first time: the cache may show a renewal before its event is handled.
func (s *sleeps) memberSeenAt(l *coordinationv1.Lease, now time.Time) time.Time {
	key := l.Namespace + "/" + l.Name
	s.mu.Lock()
	defer s.mu.Unlock()
	version := l.ResourceVersion
	if rt := l.Spec.RenewTime; rt != nil {
		version += "@" + rt.UTC().Format(time.RFC3339Nano)
	}
	seen, ok := s.members[key]
	if !ok || seen.version != version {
		seen = memberSeen{version: version, at: now}
		s.members[key] = seen
	}
	return seen.at
}

// queueDrainsOf queues the drains under way whose activity Lease is lease ("" for all of them).
func (c *Controller) queueDrainsOf(lease string) {
	s := c.sleeps
	s.mu.Lock()
	var keys []cache.ObjectName
	for key, d := range s.decisions {
		if lease == "" || d.lease == lease {
			keys = append(keys, key)
		}
	}
	s.mu.Unlock()
	for _, key := range keys {
		c.queue.Add(key)
	}
}

// lastActivity is when the controller last saw the Lease's activity change, or when it started
// if it has not seen it since.
func (s *sleeps) lastActivity(lease string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if at, ok := s.activitySeen[lease]; ok && at.After(s.startedAt) {
		return at
	}
	return s.startedAt
}

// idleAfter reads the owner's idle-after annotation: ok is false when there is none; a message
// says why a value is refused.
func (s *sleeps) idleAfter(entry scaling.InventoryEntry) (raw string, d time.Duration, ok bool, refusal string) {
	raw, ok = entry.Annotations[v1alpha1.AnnotationIdleAfter]
	if !ok {
		return "", 0, false, ""
	}
	d, err := time.ParseDuration(raw)
	switch {
	case err != nil:
		return raw, 0, true, fmt.Sprintf("annotation %s=%q is not a duration (like 15m); the target is never put to sleep", v1alpha1.AnnotationIdleAfter, raw)
	case d < s.config.MinIdleAfter:
		return raw, 0, true, fmt.Sprintf("annotation %s=%q is below the controller's minimum of %s; the target is never put to sleep", v1alpha1.AnnotationIdleAfter, raw, s.config.MinIdleAfter)
	}
	return raw, d, true, ""
}

// sleepStep is followSettled's part for targets that may sleep. It returns handled when it
// dealt with the request (wrote its status, or decided to wait).
func (c *Controller) sleepStep(ctx context.Context, key cache.ObjectName, cached *v1alpha1.ScaleRequest, target scaling.Target,
	entry scaling.InventoryEntry) (handled bool, err error) {
	s := c.sleeps
	if s == nil {
		return false, nil
	}
	switch cached.Status.Phase {
	case v1alpha1.PhaseDraining:
		return true, c.drain(ctx, key, cached, target, entry)
	case v1alpha1.PhaseAsleep:
		return true, c.followAsleep(ctx, key, cached, target, entry)
	case v1alpha1.PhaseReady:
		minReplicas := max(cached.Spec.MinReplicas, 1)
		if !entry.State.ReadyFor(minReplicas) {
			return false, nil
		}
		if !s.config.Activity.HasSynced() || !s.config.Members.HasSynced() {
			// Not before the Leases are known (a controller without the rights to read them
			// never puts anything to sleep): activity or a gate unseen would be missed.
			if _, _, ok, _ := s.idleAfter(entry); ok {
				c.queue.AddAfter(key, drainPoll*5)
				return true, nil
			}
			return false, nil
		}
		return c.considerSleep(ctx, key, cached, target, entry)
	}
	return false, nil
}

// considerSleep puts a Ready target to sleep when its owner asked for it and it has been idle
// that long: it marks the request Draining, which resolvers see and stop letting calls through,
// and which a new signal calls off.
func (c *Controller) considerSleep(ctx context.Context, key cache.ObjectName, cached *v1alpha1.ScaleRequest, target scaling.Target,
	entry scaling.InventoryEntry) (bool, error) {
	s := c.sleeps
	raw, idleAfter, ok, refusal := s.idleAfter(entry)
	sleepCond := meta.FindStatusCondition(cached.Status.Conditions, v1alpha1.ConditionSleep)
	id := targetID(cached)
	switch {
	case !ok:
		if sleepCond == nil {
			return false, nil
		}
		sr := cached.DeepCopy()
		meta.RemoveStatusCondition(&sr.Status.Conditions, v1alpha1.ConditionSleep)
		sr.Status.LastActivity = nil
		return true, c.writeStatus(ctx, cached, sr)
	case refusal != "":
		if sleepCond != nil && sleepCond.Reason == v1alpha1.ReasonInvalidIdleAfter && sleepCond.Message == refusal {
			return true, nil
		}
		sr := cached.DeepCopy()
		c.setSleep(sr, metav1.ConditionFalse, v1alpha1.ReasonInvalidIdleAfter, refusal)
		if err := c.writeStatus(ctx, cached, sr); err != nil {
			return true, err
		}
		c.recorder.Event(sr, corev1.EventTypeWarning, v1alpha1.ReasonInvalidIdleAfter, refusal)
		return true, nil
	}
	s.mu.Lock()
	gaveUp := s.stopped[id] == raw
	s.mu.Unlock()
	if gaveUp {
		return true, nil
	}
	if len(c.requestsFor(id)) > 1 {
		// Gates let a call through on the request its route names; with two requests for one
		// target, one of them Draining would not stop the other's callers.
		return false, nil
	}
	lease, err := c.ensureActivityLease(ctx, target, idleAfter)
	if err != nil {
		return true, err
	}
	now := c.clock.Now()
	last := s.lastActivity(lease.Namespace + "/" + lease.Name)
	// A signal served is activity too: its caller's renewal may still be on its way.
	if rt := cached.Status.ReadyTime; rt != nil && rt.After(last) {
		last = rt.Time
	}
	if ready := meta.FindStatusCondition(cached.Status.Conditions, v1alpha1.ConditionReady); ready != nil && ready.LastTransitionTime.After(last) {
		last = ready.LastTransitionTime.Time
	}
	idle, remaining := activity.IdleSince(last, now, idleAfter)
	if !idle {
		c.queue.AddAfter(key, remaining)
		return true, nil
	}
	current, err := c.scaler.Current(ctx, target)
	if err != nil {
		return true, err
	}
	if current.Replicas == 0 {
		return false, nil // someone else lowered it; the follow path says Idle
	}
	// As the API server keeps it: drain marks and the later checks compare it exactly.
	since := metav1.NewMicroTime(now.Truncate(time.Microsecond))
	sr := cached.DeepCopy()
	sr.Status.Phase = v1alpha1.PhaseDraining
	sr.Status.DrainingSince = &since
	sr.Status.LastActivity = lease.Spec.RenewTime
	ref := target.Ref.Kind + "/" + target.Ref.Name
	message := fmt.Sprintf("%s had no activity for %s (idle-after %s); resolvers stop letting calls through, then it is scaled to zero unless a call comes first",
		ref, now.Sub(last).Round(time.Second), raw)
	meta.SetStatusCondition(&sr.Status.Conditions, metav1.Condition{
		Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonDraining,
		Message: ref + " is going to sleep", ObservedGeneration: sr.Generation, LastTransitionTime: metav1.Time{Time: now},
	})
	c.setSleep(sr, metav1.ConditionTrue, v1alpha1.ReasonIdle, message)
	if err := c.writeStatus(ctx, cached, sr); err != nil {
		return true, err
	}
	s.mu.Lock()
	s.decisions[key] = sleepDecision{since: since.Time, scaleRV: current.ResourceVersion, replicas: current.Replicas, lease: lease.Namespace + "/" + lease.Name}
	s.mu.Unlock()
	klog.FromContext(ctx).Info("Target idle, draining", "target", target.String(), "idleAfter", raw)
	c.recorder.Event(sr, corev1.EventTypeNormal, v1alpha1.ReasonDraining, message)
	// At once: with no gate to wait for, the drain goes on; otherwise it waits for their
	// acknowledgements, which their Leases' events bring.
	c.queue.Add(key)
	return true, nil
}

// ensureActivityLease creates the target's activity Lease, or sets its interval, when the cache
// does not hold it as wanted.
func (c *Controller) ensureActivityLease(ctx context.Context, target scaling.Target, idleAfter time.Duration) (*coordinationv1.Lease, error) {
	cfg := c.sleeps.config
	name := activity.LeaseName(target.Ref.Kind, target.Ref.Name)
	seconds := int32((activity.Interval(idleAfter) + time.Second - 1) / time.Second)
	obj, exists, err := cfg.Activity.GetIndexer().GetByKey(target.Namespace + "/" + name)
	if err != nil {
		return nil, err
	}
	leases := cfg.Leases.Leases(target.Namespace)
	if exists {
		lease := obj.(*coordinationv1.Lease)
		if d := lease.Spec.LeaseDurationSeconds; d != nil && *d == seconds {
			return lease, nil
		}
		lease = lease.DeepCopy()
		lease.Spec.LeaseDurationSeconds = &seconds
		return leases.Update(ctx, lease, metav1.UpdateOptions{FieldManager: FieldManager})
	}
	now := metav1.NewMicroTime(c.clock.Now())
	holder := "zerowake-controller"
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: target.Namespace,
			Labels:      map[string]string{activity.LabelActivity: "true"},
			Annotations: map[string]string{activity.AnnotationTarget: target.Ref.Kind + "/" + target.Ref.Name}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &seconds, RenewTime: &now},
	}
	created, err := leases.Create(ctx, lease, metav1.CreateOptions{FieldManager: FieldManager})
	if apierrors.IsAlreadyExists(err) {
		return lease, nil
	}
	return created, err
}

// drain lowers a Draining target to zero once every live gate has acknowledged the drain, the
// target had no activity and no new signal since the decision, and its /scale is as it was then.
func (c *Controller) drain(ctx context.Context, key cache.ObjectName, cached *v1alpha1.ScaleRequest, target scaling.Target,
	entry scaling.InventoryEntry) error {
	s := c.sleeps
	s.mu.Lock()
	d, ok := s.decisions[key]
	s.mu.Unlock()
	if !ok || cached.Status.DrainingSince == nil || !d.since.Equal(cached.Status.DrainingSince.Time) {
		// Decided by a predecessor: what it read then is gone, so decide again.
		return c.callOffSleep(ctx, key, cached, entry, abortRestart, "the controller restarted while it drained")
	}
	if seen := s.lastActivity(d.lease); seen.After(d.since) {
		return c.callOffSleep(ctx, key, cached, entry, abortActivity, "activity was recorded while it drained")
	}
	if entry.State.Replicas != d.replicas {
		return c.callOffSleep(ctx, key, cached, entry, abortTargetChanged, "its replicas changed while it drained")
	}
	mark := activity.DrainMark(cached.Namespace, cached.Name, d.since)
	if wait := c.unacknowledged(mark); wait > 0 {
		c.queue.AddAfter(key, wait)
		return nil
	}
	// The last look, at the API server itself: a signal written since calls it off.
	live, err := c.client.ZerowakeV1alpha1().ScaleRequests(cached.Namespace).Get(ctx, cached.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if live.Generation != cached.Generation || live.Status.Phase != v1alpha1.PhaseDraining ||
		live.Status.DrainingSince == nil || !live.Status.DrainingSince.Time.Equal(d.since) {
		return nil // its informer event brings the new signal
	}
	sleeper, ok := c.scaler.(Sleeper)
	if !ok {
		return c.callOffSleep(ctx, key, cached, entry, abortTargetChanged, "this controller cannot lower replicas")
	}
	result, err := sleeper.ScaleToZero(ctx, target, d.scaleRV)
	if err != nil {
		if scaling.ReasonOf(err) == scaling.ReasonConflict {
			return c.callOffSleep(ctx, key, cached, entry, abortTargetChanged, "something changed its replicas since the decision")
		}
		return err
	}
	now := c.clock.Now()
	c.metrics.sleeps.Inc()
	c.metrics.idleToZero.Observe(now.Sub(d.since).Seconds())
	s.mu.Lock()
	delete(s.decisions, key)
	s.slept[key] = result.ResourceVersion
	s.mu.Unlock()

	sr := live.DeepCopy()
	ref := target.Ref.Kind + "/" + target.Ref.Name
	message := fmt.Sprintf("Scaled %s from %d to 0 replicas: idle for its idle-after; the next call wakes it", ref, d.replicas)
	sr.Status.Phase = v1alpha1.PhaseAsleep
	sr.Status.DrainingSince = nil
	sr.Status.Replicas, sr.Status.ReadyReplicas = 0, 0
	meta.SetStatusCondition(&sr.Status.Conditions, metav1.Condition{
		Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonAsleep,
		Message: ref + " is asleep at 0 replicas", ObservedGeneration: sr.Generation, LastTransitionTime: metav1.Time{Time: now},
	})
	c.setSleep(sr, metav1.ConditionTrue, v1alpha1.ReasonAsleep, message)
	klog.FromContext(ctx).Info("Target asleep", "target", target.String())
	c.recorder.Event(sr, corev1.EventTypeNormal, "Slept", message)
	// Asleep is recorded over the live copy; a signal written since makes this a conflict, and
	// the next pass serves that signal (the target is at zero, so it is scaled from zero).
	return c.writeStatus(ctx, live, sr)
}

// unacknowledged returns how long to wait before looking again if some live gate has not
// listed mark yet, or 0 when every one has. A gate is live while the controller saw its
// membership change within the Lease's duration; one not renewed since has fenced itself.
func (c *Controller) unacknowledged(mark string) time.Duration {
	s := c.sleeps
	now := c.clock.Now()
	var wait time.Duration
	for _, obj := range s.config.Members.GetStore().List() {
		l, ok := obj.(*coordinationv1.Lease)
		if !ok || activity.HasMark(l.Annotations[activity.AnnotationDrainsSeen], mark) {
			continue
		}
		duration := 15 * time.Second
		if l.Spec.LeaseDurationSeconds != nil {
			duration = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
		}
		expiry := s.memberSeenAt(l, now).Add(duration).Sub(now)
		if expiry <= 0 {
			continue // gone, and fenced since
		}
		if wait == 0 || min(expiry, drainPoll) < wait {
			wait = min(expiry, drainPoll)
		}
	}
	return wait
}

// callOffSleep ends a drain without lowering the target: Ready again when it is, else Idle so
// that the next signal scales it.
func (c *Controller) callOffSleep(ctx context.Context, key cache.ObjectName, cached *v1alpha1.ScaleRequest,
	entry scaling.InventoryEntry, reason, why string) error {
	s := c.sleeps
	s.mu.Lock()
	delete(s.decisions, key)
	s.mu.Unlock()
	now := c.clock.Now()
	sr := cached.DeepCopy()
	ref := sr.Spec.ScaleTargetRef.Kind + "/" + sr.Spec.ScaleTargetRef.Name
	minReplicas := max(sr.Spec.MinReplicas, 1)
	state := entry.State
	sr.Status.DrainingSince = nil
	sr.Status.Replicas, sr.Status.ReadyReplicas = state.Replicas, state.ReadyReplicas
	if state.ReadyFor(minReplicas) {
		sr.Status.Phase = v1alpha1.PhaseReady
		meta.SetStatusCondition(&sr.Status.Conditions, metav1.Condition{
			Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonTargetReady,
			Message:            fmt.Sprintf("%s has %d/%d ready replicas; its sleep was called off", ref, state.ReadyReplicas, minReplicas),
			ObservedGeneration: sr.Generation, LastTransitionTime: metav1.Time{Time: now},
		})
	} else {
		sr.Status.Phase = v1alpha1.PhaseIdle
		meta.SetStatusCondition(&sr.Status.Conditions, metav1.Condition{
			Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonTargetScaledDown,
			Message:            fmt.Sprintf("%s has %d/%d ready replicas after its sleep was called off; the next signal wakes it", ref, state.ReadyReplicas, minReplicas),
			ObservedGeneration: sr.Generation, LastTransitionTime: metav1.Time{Time: now},
		})
	}
	message := fmt.Sprintf("Sleep of %s called off: %s", ref, why)
	c.setSleep(sr, metav1.ConditionFalse, v1alpha1.ReasonSleepAborted, message)
	if err := c.writeStatus(ctx, cached, sr); err != nil {
		return err
	}
	c.metrics.sleepAborted.WithLabelValues(reason).Inc()
	c.recorder.Event(sr, corev1.EventTypeNormal, v1alpha1.ReasonSleepAborted, message)
	c.queue.Add(key) // to time the next sleep
	return nil
}

// followAsleep keeps an Asleep request truthful: a target that something else scaled up and
// made ready without any signal is Ready again, and that sleep counts as undone; after
// maxOverrides of them within overrideWindow the controller stops putting it to sleep.
func (c *Controller) followAsleep(ctx context.Context, key cache.ObjectName, cached *v1alpha1.ScaleRequest, target scaling.Target,
	entry scaling.InventoryEntry) error {
	minReplicas := max(cached.Spec.MinReplicas, 1)
	state := entry.State
	s := c.sleeps
	id := targetID(cached)
	s.mu.Lock()
	slept, ok := s.slept[key]
	s.mu.Unlock()
	if ok && !atOrAfter(entry.ResourceVersion, slept) {
		return nil // the cache's event for the scale to zero brings the request back
	}
	if !state.ReadyFor(minReplicas) {
		return nil
	}
	raw, _, _, _ := s.idleAfter(entry)
	now := c.clock.Now()
	s.mu.Lock()
	recent := s.overrides[id][:0]
	for _, at := range s.overrides[id] {
		if now.Sub(at) < overrideWindow {
			recent = append(recent, at)
		}
	}
	recent = append(recent, now)
	s.overrides[id] = recent
	delete(s.slept, key)
	gaveUp := len(recent) >= maxOverrides
	if gaveUp {
		s.stopped[id] = raw
		delete(s.overrides, id)
	}
	s.mu.Unlock()

	ref := target.Ref.Kind + "/" + target.Ref.Name
	sr := cached.DeepCopy()
	sr.Status.Phase = v1alpha1.PhaseReady
	sr.Status.Replicas, sr.Status.ReadyReplicas = state.Replicas, state.ReadyReplicas
	sr.Status.ReadyTime, sr.Status.ColdStartDuration = &metav1.Time{Time: now}, nil
	meta.SetStatusCondition(&sr.Status.Conditions, metav1.Condition{
		Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonTargetReady,
		Message:            fmt.Sprintf("%s has %d/%d ready replicas, scaled up by something else while asleep", ref, state.ReadyReplicas, minReplicas),
		ObservedGeneration: sr.Generation, LastTransitionTime: metav1.Time{Time: now},
	})
	var e event
	if gaveUp {
		e = event{corev1.EventTypeWarning, v1alpha1.ReasonSleepOverridden, fmt.Sprintf(
			"%s was scaled up by something else (an HPA's minimum, a GitOps tool?) without any call after %d of its sleeps within %s; it is no longer put to sleep until its %s annotation changes",
			ref, maxOverrides, overrideWindow, v1alpha1.AnnotationIdleAfter)}
		c.setSleep(sr, metav1.ConditionFalse, e.reason, e.message)
	} else {
		e = event{corev1.EventTypeNormal, v1alpha1.ReasonSleepAborted, fmt.Sprintf("%s was scaled up by something else while asleep, without any call", ref)}
		c.setSleep(sr, metav1.ConditionFalse, v1alpha1.ReasonSleepAborted, e.message)
	}
	if err := c.writeStatus(ctx, cached, sr); err != nil {
		return err
	}
	c.metrics.sleepAborted.WithLabelValues(abortOverridden).Inc()
	c.recorder.Event(sr, e.kind, e.reason, e.message)
	if !gaveUp {
		c.queue.Add(key)
	}
	return nil
}

// setSleep sets the Sleep condition for the current generation.
func (c *Controller) setSleep(sr *v1alpha1.ScaleRequest, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(&sr.Status.Conditions, metav1.Condition{
		Type: v1alpha1.ConditionSleep, Status: status, Reason: reason, Message: message,
		ObservedGeneration: sr.Generation, LastTransitionTime: metav1.Time{Time: c.clock.Now()},
	})
}

// leaveSleep clears what a drain or a sleep left on a request that got a new signal, and counts
// it: a drain called off by the signal, or a wake from sleep.
func (r *reconciliation) leaveSleep(phase v1alpha1.ScaleRequestPhase) {
	c := r.c
	if phase != v1alpha1.PhaseDraining && phase != v1alpha1.PhaseAsleep {
		return
	}
	status := &r.sr.Status
	status.DrainingSince = nil
	meta.RemoveStatusCondition(&status.Conditions, v1alpha1.ConditionSleep)
	if c.sleeps != nil {
		c.sleeps.mu.Lock()
		delete(c.sleeps.decisions, r.key)
		delete(c.sleeps.slept, r.key)
		c.sleeps.mu.Unlock()
	}
	if phase == v1alpha1.PhaseDraining {
		r.sleepOutcome = abortSignal
	} else {
		r.sleepOutcome = "woken"
	}
}
