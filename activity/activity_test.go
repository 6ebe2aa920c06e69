package activity

import (
	"context"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
)

func TestInterval(t *testing.T) {
	for _, c := range []struct{ idleAfter, want time.Duration }{
		{5 * time.Minute, time.Minute},
		{30 * time.Second, 6 * time.Second},
		{2 * time.Second, time.Second}, // the floor
	} {
		if got := Interval(c.idleAfter); got != c.want {
			t.Errorf("Interval(%s) = %s, want %s", c.idleAfter, got, c.want)
		}
	}
}

func TestIdleSinceCountsTheRenewalLag(t *testing.T) {
	last := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	idleAfter := 5 * time.Minute
	// A renewal may come up to an interval (1m) and a recorder's offset (under 12s) after the
	// activity it records, so only 6m12s without a change proves 5m without activity.
	if idle, remaining := IdleSince(last, last.Add(5*time.Minute), idleAfter); idle || remaining != 72*time.Second {
		t.Errorf("at 5m: idle %v, remaining %s; want not idle, 1m12s left", idle, remaining)
	}
	if idle, _ := IdleSince(last, last.Add(6*time.Minute+11*time.Second), idleAfter); idle {
		t.Error("at 6m11s: idle, want not yet")
	}
	if idle, _ := IdleSince(last, last.Add(6*time.Minute+12*time.Second), idleAfter); !idle {
		t.Error("at 6m12s: not idle, want idle")
	}
}

func TestMarks(t *testing.T) {
	since := time.Date(2026, 12, 6, 10, 0, 0, 123456789, time.UTC)
	mark := DrainMark("shop", "web", since)
	other := DrainMark("shop", "web", since.Add(time.Microsecond))
	value := FormatMarks([]string{DrainMark("shop", "api", since), mark})
	if !HasMark(value, mark) {
		t.Errorf("%q does not list %q", value, mark)
	}
	if HasMark(value, other) {
		t.Errorf("%q lists %q, a later drain of the same request", value, other)
	}
	if HasMark("", mark) {
		t.Error("an empty value lists a mark")
	}
}

func TestLeaseNameFitsAName(t *testing.T) {
	if got := LeaseName("Deployment", "web"); got != "zerowake-deployment-web" {
		t.Errorf("LeaseName = %q", got)
	}
	long := LeaseName("Deployment", strings.Repeat("a", 253))
	if len(long) > 253 || long == LeaseName("Deployment", strings.Repeat("b", 253)) {
		t.Errorf("long names: %q (%d)", long, len(long))
	}
}

func activityLease(renewed time.Time) *coordinationv1.Lease {
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: LeaseName("Deployment", "web"), ResourceVersion: "1",
			Labels: map[string]string{LabelActivity: "true"}},
		Spec: coordinationv1.LeaseSpec{LeaseDurationSeconds: ptr.To[int32](60), RenewTime: &metav1.MicroTime{Time: renewed}},
	}
}

// updates counts the Lease updates the fake API server received.
func updates(cs *fake.Clientset) int {
	n := 0
	for _, a := range cs.Actions() {
		if a.Matches("update", "leases") {
			n++
		}
	}
	return n
}

func startRecorder(t *testing.T, cs *fake.Clientset, clk *clocktesting.FakePassiveClock) *Recorder {
	t.Helper()
	r := NewRecorder(cs, RecorderOptions{Identity: "gate", Clock: clk})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); r.Stop() })
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestTouchRenewsAStaleLeaseOnce(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(now)
	cs := fake.NewClientset(activityLease(now.Add(-2 * time.Minute)))
	r := startRecorder(t, cs, clk)
	for range 100 {
		r.Touch("shop", "Deployment", "web")
	}
	r.wg.Wait()
	if n := updates(cs); n != 1 {
		t.Fatalf("%d updates for 100 calls on a stale Lease, want 1", n)
	}
	got, err := cs.CoordinationV1().Leases("shop").Get(context.Background(), LeaseName("Deployment", "web"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !got.Spec.RenewTime.Time.Equal(now) || *got.Spec.HolderIdentity != "gate" {
		t.Errorf("renewTime %s by %v, want %s by gate", got.Spec.RenewTime, got.Spec.HolderIdentity, now)
	}
	// Within the interval of its own renewal, the recorder writes nothing more, even before its
	// informer shows the renewal.
	clk.SetTime(now.Add(30 * time.Second))
	r.Touch("shop", "Deployment", "web")
	r.wg.Wait()
	if n := updates(cs); n != 1 {
		t.Errorf("%d updates 30s after a renewal with a 60s interval, want 1", n)
	}
}

func TestTouchWritesNothingForAFreshLeaseOrNone(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(now)
	cs := fake.NewClientset(activityLease(now.Add(-10 * time.Second)))
	r := startRecorder(t, cs, clk)
	r.Touch("shop", "Deployment", "web") // renewed 10s ago, interval 60s
	r.Touch("shop", "Deployment", "api") // does not sleep: no Lease
	r.wg.Wait()
	if n := updates(cs); n != 0 {
		t.Errorf("%d updates, want none", n)
	}
}

func TestTouchTakesAConflictForSomeoneElsesRenewal(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(now)
	cs := fake.NewClientset(activityLease(now.Add(-2 * time.Minute)))
	cs.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, conflict()
	})
	r := startRecorder(t, cs, clk)
	r.Touch("shop", "Deployment", "web")
	r.wg.Wait()
	if _, ok := r.renewed.Load("shop/" + LeaseName("Deployment", "web")); ok {
		t.Error("a conflicting renewal is remembered as this recorder's own")
	}
}

func conflict() error {
	return apierrors.NewConflict(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, "x", nil)
}
