package gate

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/zerowake/zerowake/activity"
	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
)

type fence struct{ serving bool }

func (f *fence) Serving() bool { return f.serving }

// touches records the activity a gate reports.
type touches struct {
	mu  sync.Mutex
	got []string
}

func (r *touches) Touch(namespace, kind, name string) {
	r.mu.Lock()
	r.got = append(r.got, namespace+"/"+kind+"/"+name)
	r.mu.Unlock()
}

func TestAFencedGateLetsNothingThrough(t *testing.T) {
	rec := &touches{}
	g, f, _ := newTestGate(t, Config{Fence: &fence{serving: false}, Activity: rec})
	f.setReady(web)
	a := g.Check(context.Background(), route(time.Second, web), "GET", "")
	if a.Outcome != OutcomeUnavailable || a.Reason != "GateFenced" || a.Status() != 503 {
		t.Fatalf("answer %+v, want 503 GateFenced", a)
	}
	if len(rec.got) != 0 {
		t.Errorf("a call not let through was recorded as activity: %v", rec.got)
	}
}

func TestCallsLetThroughAreActivity(t *testing.T) {
	rec := &touches{}
	g, f, _ := newTestGate(t, Config{Fence: &fence{serving: true}, Activity: rec})
	f.setReady(web)
	if a := g.Check(context.Background(), route(time.Second, web), "GET", ""); a.Outcome != OutcomeAwake {
		t.Fatalf("answer %+v, want awake", a)
	}
	if len(rec.got) != 1 || rec.got[0] != "shop/Deployment/web" {
		t.Errorf("activity recorded %v, want shop/Deployment/web once", rec.got)
	}
}

func draining(name string, since time.Time) *v1alpha1.ScaleRequest {
	return &v1alpha1.ScaleRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Generation: 2},
		Status: v1alpha1.ScaleRequestStatus{ObservedGeneration: 2, Phase: v1alpha1.PhaseDraining,
			DrainingSince: &metav1.MicroTime{Time: since}},
	}
}

func TestMembershipAcknowledgesTheDrainsItSees(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	cs := fake.NewClientset()
	m := NewMembership(cs.CoordinationV1(), "zerowake-system", "gate-a", logr.Discard())
	clk := clocktesting.NewFakePassiveClock(now)
	m.clock = clk
	if m.Serving() {
		t.Fatal("serving before its first renewal")
	}
	since := now.Add(-time.Second)
	m.Observe(draining("web", since), false)
	m.renewOnce(context.Background())
	if !m.Serving() {
		t.Fatal("not serving after a renewal")
	}
	lease, err := cs.CoordinationV1().Leases("zerowake-system").Get(context.Background(), "gate-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if lease.Labels[activity.LabelGateMember] != "true" || !activity.HasMark(lease.Annotations[activity.AnnotationDrainsSeen], activity.DrainMark("shop", "web", since)) {
		t.Errorf("membership Lease %v %v does not acknowledge the drain", lease.Labels, lease.Annotations)
	}
	// The drain ends (the request is Asleep): the next renewal no longer lists it.
	asleep := draining("web", since)
	asleep.Status.Phase, asleep.Status.DrainingSince = v1alpha1.PhaseAsleep, nil
	m.Observe(asleep, false)
	m.renewOnce(context.Background())
	lease, _ = cs.CoordinationV1().Leases("zerowake-system").Get(context.Background(), "gate-a", metav1.GetOptions{})
	if v := lease.Annotations[activity.AnnotationDrainsSeen]; v != "" {
		t.Errorf("drains seen %q after the drain ended, want none", v)
	}
	// Without a renewal for the fence time, the gate stops letting calls through: the
	// controller takes it for gone a full Lease duration after it saw the last renewal.
	clk.SetTime(now.Add(activity.FenceAfter(DefaultMembershipDuration)))
	if m.Serving() {
		t.Error("still serving after the fence time without a renewal")
	}
}
