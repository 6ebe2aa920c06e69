package wake_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/wake"
)

var web = wake.Deployment("shop", "web")

// existing returns a ScaleRequest for web as the API server would hold it.
func existing(gen int64, requestedAt time.Time, mutate func(*v1alpha1.ScaleRequest)) *v1alpha1.ScaleRequest {
	at := metav1.NewMicroTime(requestedAt)
	sr := &v1alpha1.ScaleRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: "uid-existing", Generation: gen,
			CreationTimestamp: metav1.NewTime(requestedAt.Add(-time.Hour))},
		Spec: v1alpha1.ScaleRequestSpec{ScaleTargetRef: web.Ref(), MinReplicas: 1, RequestedAt: &at},
	}
	if mutate != nil {
		mutate(sr)
	}
	return sr
}

func readyStatus(sr *v1alpha1.ScaleRequest) {
	g := sr.Generation
	sr.Status = v1alpha1.ScaleRequestStatus{
		ObservedGeneration: g, Phase: v1alpha1.PhaseReady, Replicas: 1, ReadyReplicas: 1,
		ColdStartDuration: &metav1.Duration{Duration: 2 * time.Second},
		Conditions: []metav1.Condition{
			{Type: v1alpha1.ConditionScaled, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonScaledFromZero, ObservedGeneration: g},
			{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonTargetReady, ObservedGeneration: g},
		},
	}
}

func failedStatus(sr *v1alpha1.ScaleRequest) {
	g := sr.Generation
	sr.Status = v1alpha1.ScaleRequestStatus{
		ObservedGeneration: g, Phase: v1alpha1.PhaseFailed,
		Conditions: []metav1.Condition{
			{Type: v1alpha1.ConditionScaled, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonTargetNotFound, ObservedGeneration: g},
		},
	}
}

// burst calls Wake n times from each of g goroutines and returns how often each action came back.
func burst(t *testing.T, c *wake.Client, target wake.Target, g, n int) map[wake.Action]int {
	t.Helper()
	var (
		mu     sync.Mutex
		counts = map[wake.Action]int{}
		wg     sync.WaitGroup
		errs   = make(chan error, g)
	)
	for range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := map[wake.Action]int{}
			for range n {
				a, err := c.Wake(context.Background(), target)
				if err != nil {
					errs <- err
					return
				}
				local[a]++
			}
			mu.Lock()
			for a, k := range local {
				counts[a] += k
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("wake: %v", err)
	}
	return counts
}

func TestWakeCoalescesAndWindows(t *testing.T) {
	f := newFakeAPI()
	c := startClient(t, f, wake.Options{})

	// 10,000 calls from 100 goroutines: exactly one create.
	counts := burst(t, c, web, 100, 100)
	if cr, pa := f.writes(); cr != 1 || pa != 0 {
		t.Fatalf("first burst: %d creates, %d patches; want 1, 0", cr, pa)
	}
	if counts[wake.ActionCreated] == 0 {
		t.Errorf("no caller saw ActionCreated: %v", counts)
	}
	for a := range counts {
		if a != wake.ActionCreated && a != wake.ActionRecentlySignalled && a != wake.ActionAlreadyActive {
			t.Errorf("unexpected action %v in %v", a, counts)
		}
	}
	sr := f.get(t, "shop", "web")
	if sr.Spec.ScaleTargetRef != web.Ref() || sr.Spec.MinReplicas != 1 || !sr.Spec.RequestedAt.Time.Equal(t0) {
		t.Errorf("created spec = %+v", sr.Spec)
	}

	// The controller makes it ready; a second burst within the window writes nothing.
	f.markReady(t, "shop", "web", 1500*time.Millisecond)
	eventually(t, "ready in cache", func() bool { return c.Status(web).Ready })
	f.clock.Step(10 * time.Second)
	burst(t, c, web, 100, 100)
	if cr, pa := f.writes(); cr != 1 || pa != 0 {
		t.Fatalf("second burst: %d creates, %d patches; want 1, 0", cr, pa)
	}

	// After the window, the stale Ready request is bumped exactly once.
	f.clock.Step(wake.DefaultWindow)
	counts = burst(t, c, web, 100, 100)
	if cr, pa := f.writes(); cr != 1 || pa != 1 {
		t.Fatalf("third burst: %d creates, %d patches; want 1, 1", cr, pa)
	}
	if counts[wake.ActionBumped] == 0 {
		t.Errorf("no caller saw ActionBumped: %v", counts)
	}
	sr = f.get(t, "shop", "web")
	if sr.Generation != 2 || !sr.Spec.RequestedAt.Time.Equal(f.clock.Now()) {
		t.Errorf("after bump: generation %d requestedAt %v; want 2, %v", sr.Generation, sr.Spec.RequestedAt, f.clock.Now())
	}

	// No call read the API: state came from the informer (one list, no gets).
	if gets, lists := f.reads(); gets != 0 || lists != 1 {
		t.Errorf("%d gets, %d lists; want 0, 1", gets, lists)
	}
}

func TestWakeDecisions(t *testing.T) {
	now := t0
	tests := []struct {
		name       string
		obj        *v1alpha1.ScaleRequest
		min        int32
		want       wake.Action
		wantPatch  bool
		wantMinGen int64
	}{
		{name: "ready and fresh", obj: existing(3, now.Add(-10*time.Second), readyStatus), want: wake.ActionAlreadyReady},
		{name: "ready and stale", obj: existing(3, now.Add(-time.Minute), readyStatus), want: wake.ActionBumped, wantPatch: true},
		{name: "failed and fresh", obj: existing(3, now.Add(-10*time.Second), failedStatus), want: wake.ActionRecentlyFailed},
		{name: "failed and stale", obj: existing(3, now.Add(-time.Minute), failedStatus), want: wake.ActionBumped, wantPatch: true},
		{name: "generation not yet observed", obj: existing(3, now.Add(-time.Hour), func(sr *v1alpha1.ScaleRequest) {
			readyStatus(sr)
			sr.Generation = 4
		}), want: wake.ActionAlreadyActive},
		{name: "scaling", obj: existing(3, now.Add(-time.Hour), func(sr *v1alpha1.ScaleRequest) {
			sr.Status = v1alpha1.ScaleRequestStatus{ObservedGeneration: 3, Phase: v1alpha1.PhaseScaling}
		}), want: wake.ActionAlreadyActive},
		{name: "pending", obj: existing(3, now.Add(-time.Hour), func(sr *v1alpha1.ScaleRequest) {
			sr.Status = v1alpha1.ScaleRequestStatus{ObservedGeneration: 3, Phase: v1alpha1.PhasePending}
		}), want: wake.ActionAlreadyActive},
		{name: "no requestedAt, created long ago", obj: existing(1, now.Add(-time.Hour), func(sr *v1alpha1.ScaleRequest) {
			readyStatus(sr)
			sr.Spec.RequestedAt = nil
		}), want: wake.ActionBumped, wantPatch: true},
		{name: "no requestedAt, created just now", obj: existing(1, now, func(sr *v1alpha1.ScaleRequest) {
			readyStatus(sr)
			sr.Spec.RequestedAt = nil
			sr.CreationTimestamp = metav1.NewTime(now.Add(-time.Second))
		}), want: wake.ActionAlreadyReady},
		{name: "more replicas wanted", obj: existing(3, now.Add(-time.Second), readyStatus), min: 3, want: wake.ActionBumped, wantPatch: true},
		{name: "fewer replicas wanted", obj: existing(3, now.Add(-time.Second), func(sr *v1alpha1.ScaleRequest) {
			sr.Spec.MinReplicas = 5
			readyStatus(sr)
		}), min: 2, want: wake.ActionAlreadyReady},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(tc.obj)
			c := startClient(t, f, wake.Options{})
			target := web
			target.MinReplicas = tc.min
			got, err := c.Wake(context.Background(), target)
			if err != nil || got != tc.want {
				t.Fatalf("Wake = %v, %v; want %v", got, err, tc.want)
			}
			cr, pa := f.writes()
			if cr != 0 || pa != map[bool]int{false: 0, true: 1}[tc.wantPatch] {
				t.Fatalf("%d creates, %d patches", cr, pa)
			}
			sr := f.get(t, "shop", "web")
			if tc.wantPatch {
				if sr.Generation != tc.obj.Generation+1 || !sr.Spec.RequestedAt.Time.Equal(now) {
					t.Errorf("after bump: generation %d requestedAt %v", sr.Generation, sr.Spec.RequestedAt)
				}
				if wantMin := max(tc.obj.Spec.MinReplicas, tc.min); sr.Spec.MinReplicas != wantMin {
					t.Errorf("minReplicas = %d; want %d", sr.Spec.MinReplicas, wantMin)
				}
				// And the bump is remembered: no second write within the window.
				if got, _ := c.Wake(context.Background(), target); got != wake.ActionRecentlySignalled {
					t.Errorf("second Wake = %v; want recently-signalled", got)
				}
				if _, pa := f.writes(); pa != 1 {
					t.Errorf("%d patches after a second Wake; want 1", pa)
				}
			} else if sr.Generation != tc.obj.Generation {
				t.Errorf("generation moved to %d", sr.Generation)
			}
		})
	}
}

func TestWakeAlreadyExistsIsSuccess(t *testing.T) {
	f := newFakeAPI()
	c := startClient(t, f, wake.Options{})
	f.intercept("create", func(a k8stesting.Action) (runtime.Object, error) {
		return nil, apierrors.NewAlreadyExists(v1alpha1.Resource("scalerequests"), "web")
	})
	got, err := c.Wake(context.Background(), web)
	if err != nil || got != wake.ActionAlreadyActive {
		t.Fatalf("Wake = %v, %v; want already-active, nil", got, err)
	}
	// Remembered like a write of our own: the cache may not show the object yet.
	if got, err := c.Wake(context.Background(), web); err != nil || got != wake.ActionRecentlySignalled {
		t.Fatalf("second Wake = %v, %v; want recently-signalled", got, err)
	}
	if cr, pa := f.writes(); cr != 1 || pa != 0 {
		t.Fatalf("%d creates, %d patches; want 1, 0", cr, pa)
	}
}

func TestWakeBumpOfDeletedObjectCreates(t *testing.T) {
	f := newFakeAPI(existing(3, t0.Add(-time.Hour), readyStatus))
	c := startClient(t, f, wake.Options{})
	// The object disappears from the server; the informer has not told the client yet.
	f.intercept("patch", func(a k8stesting.Action) (runtime.Object, error) {
		_ = f.Tracker().Delete(srGVR, "shop", "web")
		return nil, apierrors.NewNotFound(v1alpha1.Resource("scalerequests"), "web")
	})
	got, err := c.Wake(context.Background(), web)
	if err != nil || got != wake.ActionCreated {
		t.Fatalf("Wake = %v, %v; want created", got, err)
	}
	if cr, pa := f.writes(); cr != 1 || pa != 1 {
		t.Fatalf("%d creates, %d patches; want 1, 1", cr, pa)
	}
}

func TestWakeErrorBackoff(t *testing.T) {
	f := newFakeAPI()
	c := startClient(t, f, wake.Options{ErrorBackoff: 5 * time.Second})
	f.intercept("create", func(a k8stesting.Action) (runtime.Object, error) {
		return nil, apierrors.NewForbidden(v1alpha1.Resource("scalerequests"), "web", errors.New("no RBAC"))
	})
	for range 10 {
		if _, err := c.Wake(context.Background(), web); !apierrors.IsForbidden(err) {
			t.Fatalf("Wake error = %v; want Forbidden", err)
		}
	}
	if cr, _ := f.writes(); cr != 1 {
		t.Fatalf("%d creates within the backoff; want 1", cr)
	}
	f.clock.Step(5 * time.Second)
	if _, err := c.Wake(context.Background(), web); !apierrors.IsForbidden(err) {
		t.Fatalf("Wake error = %v; want Forbidden", err)
	}
	if cr, _ := f.writes(); cr != 2 {
		t.Fatalf("%d creates after the backoff; want 2", cr)
	}
}

func TestWakeMismatch(t *testing.T) {
	f := newFakeAPI(existing(1, t0.Add(-time.Hour), func(sr *v1alpha1.ScaleRequest) {
		sr.Spec.ScaleTargetRef = wake.StatefulSet("shop", "web").Ref()
		readyStatus(sr)
	}))
	c := startClient(t, f, wake.Options{})
	_, err := c.Wake(context.Background(), web)
	var me *wake.MismatchError
	if !errors.As(err, &me) || me.Existing.Kind != "StatefulSet" {
		t.Fatalf("Wake error = %v; want *MismatchError for the StatefulSet", err)
	}
	if _, err := c.WaitReady(context.Background(), web); !errors.As(err, &me) {
		t.Fatalf("WaitReady error = %v; want *MismatchError", err)
	}
	// Another API version of the same group and kind is the same workload.
	other := wake.StatefulSet("shop", "web")
	other.APIVersion = "apps/v1beta2"
	if a, err := c.Wake(context.Background(), other); err != nil || a != wake.ActionBumped {
		t.Fatalf("Wake(apps/v1beta2 StatefulSet) = %v, %v; want bumped", a, err)
	}
}

func TestWakeNamespaceOption(t *testing.T) {
	f := newFakeAPI()
	c := startClient(t, f, wake.Options{Namespace: "shop", FieldManager: "my-resolver",
		Labels: map[string]string{"app.kubernetes.io/managed-by": "my-resolver"}})
	if _, err := c.Wake(context.Background(), wake.Deployment("other", "web")); !errors.Is(err, wake.ErrNamespaceNotWatched) {
		t.Fatalf("Wake in another namespace: %v; want ErrNamespaceNotWatched", err)
	}
	if a, err := c.Wake(context.Background(), wake.Deployment("", "web")); err != nil || a != wake.ActionCreated {
		t.Fatalf("Wake with the default namespace = %v, %v", a, err)
	}
	if sr := f.get(t, "shop", "web"); sr.Labels["app.kubernetes.io/managed-by"] != "my-resolver" {
		t.Errorf("labels = %v", sr.Labels)
	}
	for _, a := range f.Actions() {
		if ca, ok := a.(k8stesting.CreateActionImpl); ok && ca.CreateOptions.FieldManager != "my-resolver" {
			t.Errorf("create with field manager %q", ca.CreateOptions.FieldManager)
		}
	}
}

func TestWakeInvalidTargets(t *testing.T) {
	f := newFakeAPI()
	c := startClient(t, f, wake.Options{})
	for _, tc := range []wake.Target{
		{Namespace: "shop", APIVersion: "apps/v1", Kind: "Deployment"},
		{Namespace: "shop", APIVersion: "apps/v1", Name: "web"},
		{Namespace: "shop", Kind: "Deployment", Name: "web"},
		{APIVersion: "apps/v1", Kind: "Deployment", Name: "web"},
		{Namespace: "shop", APIVersion: "apps/v1", Kind: "Deployment", Name: "web", MinReplicas: v1alpha1.MaxMinReplicas + 1},
	} {
		if _, err := c.Wake(context.Background(), tc); !errors.Is(err, wake.ErrInvalidTarget) {
			t.Errorf("Wake(%+v) = %v; want ErrInvalidTarget", tc, err)
		}
	}
	if cr, pa := f.writes(); cr+pa != 0 {
		t.Errorf("%d writes", cr+pa)
	}
}

func TestLifecycleErrors(t *testing.T) {
	f := newFakeAPI()
	c := wake.New(f, wake.Options{Clock: f.clock})
	if _, err := c.Wake(context.Background(), web); !errors.Is(err, wake.ErrNotStarted) {
		t.Fatalf("Wake before Start: %v", err)
	}
	if _, err := c.WaitReady(context.Background(), web); !errors.Is(err, wake.ErrNotStarted) {
		t.Fatalf("WaitReady before Start: %v", err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err == nil {
		t.Fatal("second Start succeeded")
	}
	c.Stop()
	c.Stop()
	if _, err := c.Wake(context.Background(), web); !errors.Is(err, wake.ErrStopped) {
		t.Fatalf("Wake after Stop: %v", err)
	}

	// Cancelling Start's context stops the client too.
	ctx, cancel := context.WithCancel(context.Background())
	c2 := wake.New(f, wake.Options{Clock: f.clock})
	if err := c2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	eventually(t, "stopped", func() bool {
		_, err := c2.Wake(context.Background(), web)
		return errors.Is(err, wake.ErrStopped)
	})
	c2.Stop()
}

func TestStartFailsFastWhenListingIsForbidden(t *testing.T) {
	f := newFakeAPI()
	f.intercept("list", func(a k8stesting.Action) (runtime.Object, error) {
		return nil, apierrors.NewForbidden(v1alpha1.Resource("scalerequests"), "", errors.New("no RBAC"))
	})
	c := wake.New(f, wake.Options{})
	// A long deadline: Start must return on the error, not on the deadline.
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	err := c.Start(ctx)
	if !apierrors.IsForbidden(err) {
		t.Fatalf("Start = %v; want Forbidden", err)
	}
	if _, err := c.Wake(context.Background(), web); !errors.Is(err, wake.ErrStopped) {
		t.Fatalf("Wake after failed Start: %v", err)
	}
}

// A caller for another workload of the same name that joins (or follows) a write does not take
// that write for its own, even before the informer shows the object.
func TestWakeMismatchBeforeTheCacheShowsTheWrite(t *testing.T) {
	f := newFakeAPI()
	c := startClient(t, f, wake.Options{})
	// Keep the created object out of the informer: the write succeeds but no event follows.
	f.intercept("create", func(a k8stesting.Action) (runtime.Object, error) {
		sr := a.(k8stesting.CreateAction).GetObject().(*v1alpha1.ScaleRequest).DeepCopy()
		sr.UID, sr.Generation = "uid-hidden", 1
		return sr, nil
	})
	if a, err := c.Wake(context.Background(), web); err != nil || a != wake.ActionCreated {
		t.Fatalf("Wake = %v, %v", a, err)
	}
	var me *wake.MismatchError
	if _, err := c.Wake(context.Background(), wake.StatefulSet("shop", "web")); !errors.As(err, &me) {
		t.Fatalf("Wake(StatefulSet web) = %v; want *MismatchError", err)
	}
	if cr, _ := f.writes(); cr != 1 {
		t.Fatalf("%d creates; want 1", cr)
	}
}

// A Ready request whose target was set back to zero (the controller then marks it Idle) is
// never answered from the stale Ready: the next Wake re-signals, however recently this client
// wrote, and a herd of calls costs one write; WaitReady returns only when the new signal is
// Ready.
func TestWakeResignalsAnIdleRequest(t *testing.T) {
	f := newFakeAPI()
	c := startClient(t, f, wake.Options{})
	if a, err := c.Wake(context.Background(), web); err != nil || a != wake.ActionCreated {
		t.Fatalf("first wake: %v %v", a, err)
	}
	f.markReady(t, "shop", "web", time.Second)
	eventually(t, "ready in cache", func() bool { return c.Status(web).Ready })

	// An idler sets the target back to zero within the window; the controller says so.
	f.clock.Step(5 * time.Second)
	f.setStatus(t, "shop", "web", func(sr *v1alpha1.ScaleRequest) {
		sr.Status.Phase = v1alpha1.PhaseIdle
		for i := range sr.Status.Conditions {
			if sr.Status.Conditions[i].Type == v1alpha1.ConditionReady {
				sr.Status.Conditions[i].Status = metav1.ConditionFalse
				sr.Status.Conditions[i].Reason = v1alpha1.ReasonTargetScaledDown
			}
		}
	})
	eventually(t, "idle in cache", func() bool { return c.Status(web).Phase == v1alpha1.PhaseIdle })
	if c.Status(web).Ready {
		t.Fatal("an Idle request reads as Ready")
	}

	counts := burst(t, c, web, 100, 100)
	if cr, pa := f.writes(); cr != 1 || pa != 1 {
		t.Fatalf("10,000 calls for an Idle request: %d creates, %d patches; want 1, 1", cr, pa)
	}
	if counts[wake.ActionAlreadyReady] != 0 {
		t.Fatalf("answered AlreadyReady for a target at zero: %v", counts)
	}

	waited := waitAsync(c, context.Background(), web, nil)
	select {
	case r := <-waited:
		t.Fatalf("WaitReady returned before the new signal was served: %v %v", r.cold, r.err)
	case <-time.After(50 * time.Millisecond):
	}
	f.markReady(t, "shop", "web", 300*time.Millisecond)
	r := <-waited
	if r.err != nil || r.cold != 300*time.Millisecond {
		t.Fatalf("WaitReady: %v %v", r.cold, r.err)
	}
}

// A request the controller is putting to sleep (Draining), or has (Asleep), is signalled again at
// once, however recently this client wrote: the signal calls a drain off, or wakes the target.
// Every Wake is reported as activity, and the client's informer changes reach OnChange.
func TestWakeSignalsADrainingOrAsleepRequest(t *testing.T) {
	for _, phase := range []v1alpha1.ScaleRequestPhase{v1alpha1.PhaseDraining, v1alpha1.PhaseAsleep} {
		t.Run(string(phase), func(t *testing.T) {
			f := newFakeAPI()
			rec := &activityLog{}
			var seen sync.Map
			c := startClient(t, f, wake.Options{Activity: rec, OnChange: func(sr *v1alpha1.ScaleRequest, deleted bool) {
				seen.Store(sr.Status.Phase, true)
			}})
			if _, err := c.Wake(context.Background(), web); err != nil {
				t.Fatal(err)
			}
			f.markReady(t, "shop", "web", time.Second)
			eventually(t, "ready in cache", func() bool { return c.Status(web).Ready })
			f.clock.Step(5 * time.Second) // within the window of this client's own write
			f.setStatus(t, "shop", "web", func(sr *v1alpha1.ScaleRequest) {
				sr.Status.Phase = phase
				for i := range sr.Status.Conditions {
					if sr.Status.Conditions[i].Type == v1alpha1.ConditionReady {
						sr.Status.Conditions[i].Status = metav1.ConditionFalse
						sr.Status.Conditions[i].Reason = string(phase)
					}
				}
			})
			eventually(t, "the phase in cache", func() bool { return c.Status(web).Phase == phase })
			if _, ok := seen.Load(phase); !ok {
				t.Error("OnChange did not hear of the phase the cache shows")
			}
			if c.Status(web).Ready {
				t.Fatalf("a %s request reads as Ready", phase)
			}
			a, err := c.Wake(context.Background(), web)
			if err != nil || a != wake.ActionBumped {
				t.Fatalf("Wake of a %s request: %v %v, want bumped", phase, a, err)
			}
			if cr, pa := f.writes(); cr != 1 || pa != 1 {
				t.Errorf("%d creates, %d patches; want 1, 1", cr, pa)
			}
			if n := rec.count(); n != 2 {
				t.Errorf("%d Wake calls recorded as activity, want 2", n)
			}
		})
	}
}

type activityLog struct{ n atomic.Int64 }

func (a *activityLog) Touch(namespace, kind, name string) { a.n.Add(1) }
func (a *activityLog) count() int64                       { return a.n.Load() }
