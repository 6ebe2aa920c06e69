package wake_test

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/wake"
)

// markIdle plays the controller seeing the target set back to zero at `at` (its clock): phase
// Idle, Ready False TargetScaledDown for the current generation.
func (f *fakeAPI) markIdle(t testing.TB, ns, name string, at time.Time) {
	t.Helper()
	f.setStatus(t, ns, name, func(sr *v1alpha1.ScaleRequest) {
		g := sr.Generation
		sr.Status.Phase = v1alpha1.PhaseIdle
		sr.Status.Replicas, sr.Status.ReadyReplicas = 0, 0
		sr.Status.Conditions = []metav1.Condition{
			{Type: v1alpha1.ConditionScaled, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonScaledFromZero, ObservedGeneration: g},
			{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonTargetScaledDown,
				ObservedGeneration: g, LastTransitionTime: metav1.NewTime(at)},
		}
	})
}

// patchesBecome waits (bounded, not timed) until f has seen n patches, and checks it sees no more.
func patchesBecome(t *testing.T, f *fakeAPI, n int) {
	t.Helper()
	eventually(t, "the re-signal", func() bool { _, pa := f.writes(); return pa >= n })
	if _, pa := f.writes(); pa != n {
		t.Fatalf("%d patches; want %d", pa, n)
	}
}

// An outside idler sets a Ready target to zero; a Wake a moment later is answered from the
// cache, which has not seen it yet (recently signalled). When the informer then delivers
// Idle for that generation, the client re-signals by itself, once.
func TestWakeAnsweredFromAStaleCacheIsNotLost(t *testing.T) {
	f := newFakeAPI()
	c := startClient(t, f, wake.Options{})
	ctx := context.Background()
	if a, err := c.Wake(ctx, web); err != nil || a != wake.ActionCreated {
		t.Fatalf("first wake: %v %v", a, err)
	}
	f.markReady(t, "shop", "web", time.Second)
	eventually(t, "ready in cache", func() bool { return c.Status(web).Ready })

	// The idler scales down at t0+5s; the Wake at the same moment still sees Ready.
	f.clock.Step(5 * time.Second)
	scaledDown := f.clock.Now()
	if a, err := c.Wake(ctx, web); err != nil || a.Wrote() {
		t.Fatalf("Wake before the cache sees the scale-down: %v %v; want an answer from the cache", a, err)
	}
	// The controller notices 20ms later (its condition time has whole seconds).
	f.markIdle(t, "shop", "web", scaledDown.Add(20*time.Millisecond).Truncate(time.Second))
	patchesBecome(t, f, 1)
	eventually(t, "generation 2 after the re-signal", func() bool { return c.Status(web).Generation == 2 })

	// Bounded: another status write about the same transition does not signal again, nor does
	// the new generation going Idle with no demand since.
	f.setStatus(t, "shop", "web", func(sr *v1alpha1.ScaleRequest) { sr.Status.Phase = v1alpha1.PhaseIdle })
	f.clock.Step(time.Minute)
	f.markIdle(t, "shop", "web", f.clock.Now())
	time.Sleep(50 * time.Millisecond) // let a wrong re-signal happen, if there is one
	patchesBecome(t, f, 1)
}

// Demand answered well before the scale-down was served by the target while it was up: the
// Idle that follows does not re-signal.
func TestOldDemandDoesNotResignal(t *testing.T) {
	f := newFakeAPI()
	c := startClient(t, f, wake.Options{})
	ctx := context.Background()
	if _, err := c.Wake(ctx, web); err != nil {
		t.Fatal(err)
	}
	f.markReady(t, "shop", "web", time.Second)
	eventually(t, "ready in cache", func() bool { return c.Status(web).Ready })
	f.clock.Step(time.Second)
	if a, err := c.Wake(ctx, web); err != nil || a.Wrote() {
		t.Fatalf("Wake = %v %v", a, err)
	}
	f.clock.Step(20 * time.Second)
	f.markIdle(t, "shop", "web", f.clock.Now())
	eventually(t, "idle in cache", func() bool { return c.Status(web).Phase == v1alpha1.PhaseIdle })
	time.Sleep(50 * time.Millisecond) // let a wrong re-signal happen, if there is one
	if _, pa := f.writes(); pa != 0 {
		t.Fatalf("%d patches for demand 20s older than the scale-down; want 0", pa)
	}
}

// Demand recorded by Demand (the gate's fast path) counts like a Wake answered from the cache.
func TestDemandOnTheFastPathIsNotLost(t *testing.T) {
	f := newFakeAPI()
	c := startClient(t, f, wake.Options{})
	if _, err := c.Wake(context.Background(), web); err != nil {
		t.Fatal(err)
	}
	f.markReady(t, "shop", "web", time.Second)
	eventually(t, "ready in cache", func() bool { return c.Status(web).Ready })
	f.clock.Step(3 * time.Second)
	if s := c.Demand(web); !s.Ready {
		t.Fatalf("Demand = %+v; want Ready from the cache", s)
	}
	f.markIdle(t, "shop", "web", f.clock.Now().Truncate(time.Second))
	patchesBecome(t, f, 1)
	if n := testing.AllocsPerRun(100, func() { c.Demand(web) }); n != 0 {
		t.Errorf("Demand allocates %v times per call", n)
	}
}

// WaitReady seeing Idle for the generation it waits on re-signals instead of waiting for its
// timeout: the target went back to zero before it was ready.
func TestWaitReadyResignalsWhenIdle(t *testing.T) {
	f := newFakeAPI()
	c := startClient(t, f, wake.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if a, err := c.Wake(ctx, web); err != nil || a != wake.ActionCreated {
		t.Fatalf("wake: %v %v", a, err)
	}
	res := waitAsync(c, ctx, web, nil)
	eventually(t, "created in cache", func() bool { return c.Status(web).Exists })
	f.setStatus(t, "shop", "web", func(sr *v1alpha1.ScaleRequest) { sr.Status.Phase = v1alpha1.PhaseScaling })
	f.clock.Step(2 * time.Second)
	f.markIdle(t, "shop", "web", f.clock.Now())
	patchesBecome(t, f, 1)
	eventually(t, "the new generation in cache", func() bool { return c.Status(web).Generation == 2 })
	f.markReady(t, "shop", "web", time.Second)
	if r := <-res; r.err != nil {
		t.Fatalf("WaitReady = %v", r.err)
	}
}
