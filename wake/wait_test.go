package wake_test

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/wake"
)

type waitResult struct {
	cold time.Duration
	err  error
}

// waitAsync runs WaitReady in a goroutine and returns its result channel.
func waitAsync(c *wake.Client, ctx context.Context, target wake.Target, progress func(wake.Status)) <-chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		cold, err := c.WaitReadyWithProgress(ctx, target, progress)
		ch <- waitResult{cold, err}
	}()
	return ch
}

func TestWaitReadyReturnsColdStart(t *testing.T) {
	f := newFakeAPI()
	c := startClient(t, f, wake.Options{})
	if _, err := c.Wake(context.Background(), web); err != nil {
		t.Fatal(err)
	}
	phases := make(chan wake.Status, 16)
	res := waitAsync(c, context.Background(), web, func(s wake.Status) { phases <- s })

	// Pending (rescale window), then Scaling, then Ready: each step reaches the waiter.
	eventually(t, "created in cache", func() bool { return c.Status(web).Exists })
	f.setStatus(t, "shop", "web", func(sr *v1alpha1.ScaleRequest) {
		sr.Status.Phase = v1alpha1.PhasePending
		sr.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionScaled, Status: metav1.ConditionFalse,
			Reason: v1alpha1.ReasonRescaleWindow, ObservedGeneration: sr.Generation}}
	})
	waitPhase(t, phases, v1alpha1.PhasePending)
	f.setStatus(t, "shop", "web", func(sr *v1alpha1.ScaleRequest) { sr.Status.Phase = v1alpha1.PhaseScaling })
	waitPhase(t, phases, v1alpha1.PhaseScaling)
	f.markReady(t, "shop", "web", 1500*time.Millisecond)

	r := <-res
	if r.err != nil || r.cold != 1500*time.Millisecond {
		t.Fatalf("WaitReady = %v, %v; want 1.5s, nil", r.cold, r.err)
	}
	last := drainLast(phases)
	if !last.Ready || last.Reason != v1alpha1.ReasonTargetReady {
		t.Errorf("last progress = %+v", last)
	}

	// Already ready: returns at once.
	if cold, err := c.WaitReady(context.Background(), web); err != nil || cold != 1500*time.Millisecond {
		t.Fatalf("second WaitReady = %v, %v", cold, err)
	}
}

// waitPhase reads progress until the phase is reported (failing, not hanging, if it never is).
func waitPhase(t *testing.T, ch <-chan wake.Status, want v1alpha1.ScaleRequestPhase) {
	t.Helper()
	guard := time.After(10 * time.Second)
	for {
		select {
		case s := <-ch:
			if s.Observed && s.Phase == want {
				return
			}
		case <-guard:
			t.Fatalf("phase %s never reported", want)
		}
	}
}

func drainLast(ch <-chan wake.Status) wake.Status {
	var last wake.Status
	for {
		select {
		case s := <-ch:
			last = s
		default:
			return last
		}
	}
}

func TestWaitReadyIgnoresReadyOfOlderGeneration(t *testing.T) {
	f := newFakeAPI(existing(3, t0.Add(-time.Hour), readyStatus))
	c := startClient(t, f, wake.Options{})
	if a, err := c.Wake(context.Background(), web); err != nil || a != wake.ActionBumped {
		t.Fatalf("Wake = %v, %v", a, err)
	}
	res := waitAsync(c, context.Background(), web, nil)
	eventually(t, "bump in cache", func() bool { return c.Status(web).Generation == 4 })
	select {
	case r := <-res:
		t.Fatalf("WaitReady returned %v, %v for a generation the controller has not served", r.cold, r.err)
	default:
	}
	f.markReady(t, "shop", "web", 700*time.Millisecond)
	if r := <-res; r.err != nil || r.cold != 700*time.Millisecond {
		t.Fatalf("WaitReady = %v, %v; want 700ms", r.cold, r.err)
	}
}

func TestWaitReadyFailed(t *testing.T) {
	for _, tc := range []struct{ cond, reason string }{
		{v1alpha1.ConditionScaled, v1alpha1.ReasonTargetNotFound},
		{v1alpha1.ConditionScaled, v1alpha1.ReasonKindNotAllowed},
		{v1alpha1.ConditionReady, v1alpha1.ReasonReadyTimeout},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			f := newFakeAPI()
			c := startClient(t, f, wake.Options{})
			if _, err := c.Wake(context.Background(), web); err != nil {
				t.Fatal(err)
			}
			res := waitAsync(c, context.Background(), web, nil)
			f.markFailed(t, "shop", "web", tc.cond, tc.reason, "it broke")
			r := <-res
			var fe *wake.FailedError
			if !errors.As(r.err, &fe) || !errors.Is(r.err, wake.ErrFailed) {
				t.Fatalf("WaitReady error = %v; want *FailedError", r.err)
			}
			if fe.Reason != tc.reason || fe.Condition != tc.cond || fe.Message != "it broke" || fe.Generation != 1 {
				t.Errorf("FailedError = %+v", fe)
			}
			// Failed within the window: Wake does not write again.
			if a, err := c.Wake(context.Background(), web); err != nil || a != wake.ActionRecentlySignalled {
				t.Errorf("Wake after failure = %v, %v", a, err)
			}
		})
	}
}

func TestWaitReadyContextEnds(t *testing.T) {
	f := newFakeAPI()
	c := startClient(t, f, wake.Options{})
	if _, err := c.Wake(context.Background(), web); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	res := waitAsync(c, ctx, web, nil)
	eventually(t, "created in cache", func() bool { return c.Status(web).Exists })
	cancel()
	if r := <-res; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("WaitReady = %v; want context.Canceled", r.err)
	}
}

func TestWaitReadyStopAndDelete(t *testing.T) {
	f := newFakeAPI()
	c := startClient(t, f, wake.Options{})
	if _, err := c.Wake(context.Background(), web); err != nil {
		t.Fatal(err)
	}
	// The waiter must have seen the object: WaitReady for a request that does not exist (yet)
	// waits for it to be created.
	seen := make(chan struct{}, 1)
	res := waitAsync(c, context.Background(), web, func(wake.Status) {
		select {
		case seen <- struct{}{}:
		default:
		}
	})
	<-seen
	if err := f.ZerowakeV1alpha1().ScaleRequests("shop").Delete(context.Background(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if r := <-res; !errors.Is(r.err, wake.ErrDeleted) {
		t.Fatalf("WaitReady after delete = %v; want ErrDeleted", r.err)
	}
	// Deleting forgets the write: the next Wake re-creates.
	if a, err := c.Wake(context.Background(), web); err != nil || a != wake.ActionCreated {
		t.Fatalf("Wake after delete = %v, %v; want created", a, err)
	}

	res = waitAsync(c, context.Background(), wake.Deployment("shop", "never"), nil)
	c.Stop()
	if r := <-res; !errors.Is(r.err, wake.ErrStopped) {
		t.Fatalf("WaitReady after Stop = %v; want ErrStopped", r.err)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	settle := func() int {
		runtime.GC()
		return runtime.NumGoroutine()
	}
	before := settle()
	for range 5 {
		f := newFakeAPI()
		c := wake.New(f, wake.Options{Clock: f.clock})
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Wake(context.Background(), web); err != nil {
			t.Fatal(err)
		}
		res := waitAsync(c, context.Background(), web, nil)
		ctx, cancel := context.WithCancel(context.Background())
		res2 := waitAsync(c, ctx, wake.Deployment("shop", "other"), nil)
		cancel()
		<-res2
		c.Stop()
		<-res
	}
	// Goroutines exit asynchronously after Stop returns only where the runtime schedules them
	// (e.g. singleflight's DoChan wrapper); allow a small tolerance and some time to settle.
	const tolerance = 2
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := settle()
		if n <= before+tolerance {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after five start/stop cycles:\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
