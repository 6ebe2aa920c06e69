package wake_test

import (
	"context"
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/wake"
)

// Status answers for the target asked about: a Ready request for another workload that shares
// the name, or Ready for fewer replicas than asked, is not Ready for this target.
func TestStatusIsAboutTheTargetAskedFor(t *testing.T) {
	f := newFakeAPI(existing(1, t0.Add(-time.Second), readyStatus))
	c := startClient(t, f, wake.Options{})

	if s := c.Status(web); !s.Ready || s.Mismatch {
		t.Fatalf("Status(web) = %+v; want Ready", s)
	}
	sts := wake.StatefulSet("shop", "web")
	if s := c.Status(sts); s.Ready || !s.Mismatch {
		t.Errorf("Status(StatefulSet shop/web) of the Deployment's request = %+v; want not Ready, Mismatch", s)
	}
	three := web
	three.MinReplicas = 3
	if s := c.Status(three); s.Ready || s.Mismatch {
		t.Errorf("Status(web:3) of a request Ready for 1 = %+v; want not Ready", s)
	}
	one := web
	one.MinReplicas = 1
	if s := c.Status(one); !s.Ready {
		t.Errorf("Status(web:1) = %+v; want Ready", s)
	}

	// WaitReady for 3 does not take Ready for 1 as its answer.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.WaitReady(ctx, three); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitReady(web:3) on a request Ready for 1 = %v; want it to keep waiting", err)
	}
}

// The controller may take Ready back without a new signal: the target lost its ready pods
// (Scaling, Ready False TargetNotReady), or it was deleted or its owner opted out (Failed,
// Scaled False TargetNotFound or NotOptedIn). The first is still being served: no write, and
// WaitReady keeps waiting; the second is a failure of the latest signal.
func TestControllerTakesReadyBack(t *testing.T) {
	notReady := func(sr *v1alpha1.ScaleRequest) {
		readyStatus(sr)
		sr.Status.Phase = v1alpha1.PhaseScaling
		sr.Status.ReadyReplicas = 0
		sr.Status.Conditions[1] = metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse,
			Reason: "TargetNotReady", ObservedGeneration: sr.Generation}
	}
	gone := func(reason string) func(*v1alpha1.ScaleRequest) {
		return func(sr *v1alpha1.ScaleRequest) {
			readyStatus(sr)
			sr.Status.Phase = v1alpha1.PhaseFailed
			sr.Status.Conditions[0] = metav1.Condition{Type: v1alpha1.ConditionScaled, Status: metav1.ConditionFalse,
				Reason: reason, ObservedGeneration: sr.Generation}
			sr.Status.Conditions[1] = metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse,
				Reason: reason, ObservedGeneration: sr.Generation}
		}
	}

	t.Run("lost its ready pods", func(t *testing.T) {
		f := newFakeAPI(existing(2, t0.Add(-time.Hour), notReady))
		c := startClient(t, f, wake.Options{})
		if s := c.Status(web); s.Ready || s.Failed || s.Reason != "TargetNotReady" {
			t.Errorf("Status = %+v; want neither Ready nor Failed, reason TargetNotReady", s)
		}
		if a, err := c.Wake(context.Background(), web); err != nil || a != wake.ActionAlreadyActive {
			t.Errorf("Wake = %v, %v; want already-active (no write)", a, err)
		}
		if cr, pa := f.writes(); cr+pa != 0 {
			t.Errorf("%d creates, %d patches; want none", cr, pa)
		}
		res := waitAsync(c, context.Background(), web, nil)
		select {
		case r := <-res:
			t.Fatalf("WaitReady returned %v, %v while the target has no ready pods", r.cold, r.err)
		case <-time.After(50 * time.Millisecond):
		}
		f.markReady(t, "shop", "web", 0)
		if r := <-res; r.err != nil {
			t.Fatalf("WaitReady = %v once ready again", r.err)
		}
	})
	for _, reason := range []string{v1alpha1.ReasonTargetNotFound, v1alpha1.ReasonNotOptedIn} {
		t.Run(reason, func(t *testing.T) {
			f := newFakeAPI(existing(2, t0.Add(-time.Second), gone(reason)))
			c := startClient(t, f, wake.Options{})
			if s := c.Status(web); s.Ready || !s.Failed || s.Reason != reason {
				t.Errorf("Status = %+v; want Failed %s", s, reason)
			}
			if a, err := c.Wake(context.Background(), web); err != nil || a != wake.ActionRecentlyFailed {
				t.Errorf("Wake = %v, %v; want recently-failed within the window", a, err)
			}
			var fe *wake.FailedError
			if _, err := c.WaitReady(context.Background(), web); !errors.As(err, &fe) || fe.Reason != reason {
				t.Errorf("WaitReady = %v; want *FailedError %s", err, reason)
			}
		})
	}
}
