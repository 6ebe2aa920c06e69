package wake_test

import (
	"context"
	"testing"
	"time"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/wake"
)

// A request refused because it asks more than the owner allows (AboveOwnerCap) is lowered by a
// signal asking less, at once (the refusal was of the higher number); other requests are never
// lowered.
func TestWakeLowersARequestRefusedAboveTheCap(t *testing.T) {
	f := newFakeAPI()
	c := startClient(t, f, wake.Options{})
	ctx := context.Background()
	greedy := web
	greedy.MinReplicas = 1000
	if _, err := c.Wake(ctx, greedy); err != nil {
		t.Fatal(err)
	}
	f.markFailed(t, "shop", "web", v1alpha1.ConditionScaled, v1alpha1.ReasonAboveOwnerCap, "cap 2")
	eventually(t, "refusal in cache", func() bool { return c.Status(web).Failed })

	two := web
	two.MinReplicas = 2
	if a, err := c.Wake(ctx, two); err != nil || a != wake.ActionBumped {
		t.Fatalf("Wake(web:2) on a request refused for 1000 = %v, %v; want bumped", a, err)
	}
	if sr := f.get(t, "shop", "web"); sr.Spec.MinReplicas != 2 {
		t.Fatalf("minReplicas %d after a signal for 2; want 2", sr.Spec.MinReplicas)
	}

	// Ready for 2: a signal for 1 does not lower it (a route asking more keeps what it asked).
	f.markReady(t, "shop", "web", time.Second)
	eventually(t, "ready in cache", func() bool { return c.Status(two).Ready })
	f.clock.Step(time.Minute)
	if a, err := c.Wake(ctx, web); err != nil || a != wake.ActionBumped {
		t.Fatalf("Wake(web) after the window = %v, %v; want bumped", a, err)
	}
	if sr := f.get(t, "shop", "web"); sr.Spec.MinReplicas != 2 {
		t.Fatalf("minReplicas %d after a signal for 1 on a served request; want 2 kept", sr.Spec.MinReplicas)
	}
}
