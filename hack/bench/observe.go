package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/generated/clientset/versioned"
)

// times are the moments this process first saw something happen to one target and its
// ScaleRequest, stamped as each watch event arrived (zero until seen).
type times struct {
	specScaled  time.Time // Deployment spec.replicas >= min
	deployReady time.Time // Deployment status.readyReplicas >= min
	condScaled  time.Time // ScaleRequest condition Scaled=True for its generation
	condReady   time.Time // ScaleRequest condition Ready=True for its generation
	// readySeen is the controller's own stamp of when it first saw the target ready
	// (status.readyTime of the status write that said Ready).
	readySeen     time.Time
	scaledReasons string
}

// tracker watches the Deployments and ScaleRequests of one namespace and records when each
// reaches the states the benchmark times. Waiting is on watch events, never on polling.
type tracker struct {
	min int32

	mu      sync.Mutex
	byName  map[string]*times
	changed chan struct{} // closed and replaced on every recorded change
	counts  struct{ specScaled, deployReady, condScaled, condReady int }
	last    struct{ specScaled, deployReady, condScaled, condReady time.Time }
	errs    []error
}

func newTracker(ctx context.Context, kube kubernetes.Interface, client versioned.Interface, ns string, minReplicas int32) (*tracker, error) {
	t := &tracker{min: minReplicas, byName: map[string]*times{}, changed: make(chan struct{})}
	deployments := kube.AppsV1().Deployments(ns)
	list, err := deployments.List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	dw, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return deployments.Watch(ctx, o)
		},
	})
	if err != nil {
		return nil, err
	}
	srs := client.ZerowakeV1alpha1().ScaleRequests(ns)
	srList, err := srs.List(ctx, metav1.ListOptions{})
	if err != nil {
		dw.Stop()
		return nil, err
	}
	sw, err := watchtools.NewRetryWatcherWithContext(ctx, srList.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return srs.Watch(ctx, o)
		},
	})
	if err != nil {
		dw.Stop()
		return nil, err
	}
	for i := range list.Items {
		t.deployment(time.Time{}, &list.Items[i])
	}
	for i := range srList.Items {
		t.scaleRequest(time.Time{}, &srList.Items[i])
	}
	go t.run(ctx, dw)
	go t.run(ctx, sw)
	return t, nil
}

func (t *tracker) run(ctx context.Context, w watch.Interface) {
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.ResultChan():
			if !ok {
				return
			}
			now := time.Now()
			switch obj := ev.Object.(type) {
			case *appsv1.Deployment:
				t.deployment(now, obj)
			case *v1alpha1.ScaleRequest:
				t.scaleRequest(now, obj)
			case *metav1.Status:
				t.mu.Lock()
				t.errs = append(t.errs, fmt.Errorf("watch: %s", obj.Message))
				t.mu.Unlock()
			}
		}
	}
}

// entryLocked returns the times of name, creating them.
func (t *tracker) entryLocked(name string) *times {
	e := t.byName[name]
	if e == nil {
		e = &times{}
		t.byName[name] = e
	}
	return e
}

func (t *tracker) deployment(now time.Time, d *appsv1.Deployment) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entryLocked(d.Name)
	changed := false
	if d.Spec.Replicas != nil && *d.Spec.Replicas >= t.min && e.specScaled.IsZero() {
		e.specScaled = stamp(now)
		t.counts.specScaled++
		t.last.specScaled = later(t.last.specScaled, now)
		changed = true
	}
	if d.Status.ReadyReplicas >= t.min && e.deployReady.IsZero() {
		e.deployReady = stamp(now)
		t.counts.deployReady++
		t.last.deployReady = later(t.last.deployReady, now)
		changed = true
	}
	if changed {
		t.notifyLocked()
	}
}

func (t *tracker) scaleRequest(now time.Time, sr *v1alpha1.ScaleRequest) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entryLocked(sr.Name)
	changed := false
	if c := meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionScaled); c != nil && c.Status == metav1.ConditionTrue &&
		c.ObservedGeneration == sr.Generation && e.condScaled.IsZero() {
		e.condScaled = stamp(now)
		e.scaledReasons = c.Reason
		t.counts.condScaled++
		t.last.condScaled = later(t.last.condScaled, now)
		changed = true
	}
	if c := meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionReady); c != nil && c.Status == metav1.ConditionTrue &&
		c.ObservedGeneration == sr.Generation && e.condReady.IsZero() {
		e.condReady = stamp(now)
		if sr.Status.ReadyTime != nil {
			e.readySeen = sr.Status.ReadyTime.Time
		}
		t.counts.condReady++
		t.last.condReady = later(t.last.condReady, now)
		changed = true
	}
	if changed {
		t.notifyLocked()
	}
}

// stamp turns the zero time of the initial list into a marker that is set but predates everything.
func stamp(now time.Time) time.Time {
	if now.IsZero() {
		return time.Unix(0, 1)
	}
	return now
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func (t *tracker) notifyLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// get returns a copy of name's times.
func (t *tracker) get(name string) times {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.byName[name]; e != nil {
		return *e
	}
	return times{}
}

// scaledSince returns, for each target seen scaled, the time from sent[i] until then.
func (t *tracker) scaledSince(targets []string, sent []time.Time) samples {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(samples, 0, len(targets))
	for i, name := range targets {
		if e := t.byName[name]; e != nil && !e.specScaled.IsZero() {
			out = append(out, e.specScaled.Sub(sent[i]))
		}
	}
	return out
}

// wait blocks until cond (called with the lock held) holds, ctx ends or timeout passes.
func (t *tracker) wait(ctx context.Context, timeout time.Duration, what string, cond func(t *tracker) bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		t.mu.Lock()
		ok := cond(t)
		ch := t.changed
		errs := t.errs
		t.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("timed out after %s waiting for %s (watch errors: %v)", timeout, what, errs)
		}
	}
}
