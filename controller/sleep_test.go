package controller

import (
	"context"
	"errors"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeinformers "k8s.io/client-go/informers"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/zerowake/zerowake/activity"
	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/scaling"
)

// sleepyScaler is fakeScaler that can also lower a target to zero.
type sleepyScaler struct {
	*fakeScaler
	zeroErr   error
	zeroCalls []string // the resourceVersions the scale to zero was guarded by
	zeroRV    string   // the target's resourceVersion after the scale to zero
}

func (s *sleepyScaler) ScaleToZero(_ context.Context, _ scaling.Target, resourceVersion string) (scaling.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.zeroCalls = append(s.zeroCalls, resourceVersion)
	return scaling.Result{Resource: deployments, Scaled: s.zeroErr == nil, ResourceVersion: s.zeroRV}, s.zeroErr
}

type sleepFixture struct {
	*fixture
	kube   *kubefake.Clientset
	scaler *sleepyScaler
}

const testIdleAfter = 30 * time.Second

// newSleepFixture is a Ready request for shop/web whose target asks to sleep after idleAfter
// (raw, as the annotation says), with one gate member whose Lease the controller has just seen.
func newSleepFixture(t *testing.T, raw string) *sleepFixture {
	t.Helper()
	sr := readyRequest()
	sr.Status.ReadyTime = &metav1.Time{Time: t0}
	f := newFixture(t, DefaultAllowedKinds, sr)
	f.ctrl.config.RequireOptIn = true
	f.inventory.set("web", scaling.InventoryEntry{
		State:       scaling.TargetState{Exists: true, Current: true, Replicas: 1, ReadyReplicas: 1},
		Annotations: map[string]string{v1alpha1.AnnotationMaxReplicas: "1", v1alpha1.AnnotationIdleAfter: raw},
	})
	scaler := &sleepyScaler{fakeScaler: f.scaler}
	scaler.current = scaling.Result{Resource: deployments, Replicas: 1, ResourceVersion: "41"}
	f.ctrl.scaler = scaler

	kube := kubefake.NewClientset(&coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "zerowake-system", Name: "gate-a", Labels: map[string]string{activity.LabelGateMember: "true"}},
		Spec:       coordinationv1.LeaseSpec{LeaseDurationSeconds: ptr.To[int32](15)},
	})
	factory := kubeinformers.NewSharedInformerFactory(kube, 0)
	leases := factory.Coordination().V1().Leases().Informer()
	members := kubeinformers.NewSharedInformerFactory(kube, 0)
	f.ctrl.config.Sleep = &SleepConfig{Leases: kube.CoordinationV1(), Activity: leases,
		Members: members.Coordination().V1().Leases().Informer()}
	if err := f.ctrl.startSleeping(); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); factory.Shutdown(); members.Shutdown() })
	factory.Start(stop)
	members.Start(stop)
	if !cache.WaitForCacheSync(stop, leases.HasSynced, f.ctrl.config.Sleep.Members.HasSynced) {
		t.Fatal("lease caches did not sync")
	}
	return &sleepFixture{fixture: f, kube: kube, scaler: scaler}
}

// renewMember has the gate member renew its Lease listing marks, and waits until the
// controller saw it.
func (f *sleepFixture) renewMember(marks ...string) {
	f.t.Helper()
	lease, err := f.kube.CoordinationV1().Leases("zerowake-system").Get(context.Background(), "gate-a", metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	lease.Annotations = map[string]string{activity.AnnotationDrainsSeen: activity.FormatMarks(marks)}
	lease.Spec.RenewTime = &metav1.MicroTime{Time: f.clock.Now()}
	lease.ResourceVersion = nextVersion(lease.ResourceVersion)
	if _, err := f.kube.CoordinationV1().Leases("zerowake-system").Update(context.Background(), lease, metav1.UpdateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	members := f.ctrl.config.Sleep.Members.GetStore()
	deadline := time.Now().Add(5 * time.Second) // the fake's watch delivers within milliseconds
	for time.Now().Before(deadline) {
		obj, ok, _ := members.GetByKey("zerowake-system/gate-a")
		if ok && obj.(*coordinationv1.Lease).Spec.RenewTime.Equal(lease.Spec.RenewTime) &&
			obj.(*coordinationv1.Lease).Annotations[activity.AnnotationDrainsSeen] == activity.FormatMarks(marks) {
			// Seen at this moment of the controller's clock, as its event handler would.
			f.ctrl.sleeps.memberSeenAt(obj.(*coordinationv1.Lease), f.clock.Now())
			return
		}
		time.Sleep(time.Millisecond)
	}
	f.t.Fatal("the controller did not see the member's renewal")
}

func (f *sleepFixture) drainNow() v1alpha1.ScaleRequestStatus {
	f.t.Helper()
	if err := f.sync(); err != nil {
		f.t.Fatal(err)
	}
	if n := len(f.statusWrites()); n != 0 {
		f.t.Fatalf("%d status writes before the target was idle", n)
	}
	// The controller created the activity Lease; its informer event sets the activity clock.
	key := "shop/" + activity.LeaseName("Deployment", "web")
	deadline := time.Now().Add(5 * time.Second) // the fake's watch delivers within milliseconds
	seen := false
	for !seen && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
		f.ctrl.sleeps.mu.Lock()
		_, seen = f.ctrl.sleeps.activitySeen[key]
		f.ctrl.sleeps.mu.Unlock()
	}
	if !seen {
		f.t.Fatal("the controller did not see the activity Lease it created")
	}
	// Idle after idle-after plus the renewal lag without activity.
	f.clock.Step(testIdleAfter + activity.MaxLag(testIdleAfter))
	f.renewMember() // a live gate that has not seen the drain yet
	if err := f.sync(); err != nil {
		f.t.Fatal(err)
	}
	status := f.lastStatus()
	f.applyLastWrite()
	return status
}

func TestIdleTargetSleepsOnceEveryGateAcknowledged(t *testing.T) {
	f := newSleepFixture(t, "30s")
	status := f.drainNow()
	if status.Phase != v1alpha1.PhaseDraining || status.DrainingSince == nil {
		t.Fatalf("phase %s, drainingSince %v; want Draining with its time", status.Phase, status.DrainingSince)
	}
	expectCondition(t, status, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonDraining)
	expectCondition(t, status, v1alpha1.ConditionSleep, metav1.ConditionTrue, v1alpha1.ReasonIdle)
	f.expectEvents("Normal Draining")

	// The gate has not listed the drain: nothing is lowered.
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if len(f.scaler.zeroCalls) != 0 {
		t.Fatal("scaled to zero before the live gate acknowledged the drain")
	}
	f.renewMember(activity.DrainMark("shop", "web", status.DrainingSince.Time))
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if len(f.scaler.zeroCalls) != 1 || f.scaler.zeroCalls[0] != "41" {
		t.Fatalf("scales to zero %v, want one guarded by the resourceVersion read at the decision (41)", f.scaler.zeroCalls)
	}
	asleep := f.lastStatus()
	if asleep.Phase != v1alpha1.PhaseAsleep || asleep.DrainingSince != nil {
		t.Fatalf("phase %s, drainingSince %v; want Asleep without it", asleep.Phase, asleep.DrainingSince)
	}
	expectCondition(t, asleep, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonAsleep)
	f.expectEvents("Normal Slept")
}

func TestGoneGateIsNotWaitedFor(t *testing.T) {
	f := newSleepFixture(t, "30s")
	f.drainNow()
	f.events()
	// The member is not renewed for its Lease's duration (15s): it has fenced itself.
	f.clock.Step(15 * time.Second)
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if len(f.scaler.zeroCalls) != 1 {
		t.Fatalf("%d scales to zero once the only gate's membership expired, want 1", len(f.scaler.zeroCalls))
	}
}

func TestSleepIsCalledOffWhenTheTargetChanged(t *testing.T) {
	f := newSleepFixture(t, "30s")
	status := f.drainNow()
	f.events()
	f.renewMember(activity.DrainMark("shop", "web", status.DrainingSince.Time))
	f.scaler.zeroErr = &scaling.Error{Reason: scaling.ReasonConflict, Err: errors.New("the object has been modified")}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	back := f.lastStatus()
	if back.Phase != v1alpha1.PhaseReady || back.DrainingSince != nil {
		t.Fatalf("phase %s after a conflict, want Ready again", back.Phase)
	}
	expectCondition(t, back, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonTargetReady)
	expectCondition(t, back, v1alpha1.ConditionSleep, metav1.ConditionFalse, v1alpha1.ReasonSleepAborted)
	f.expectEvents("Normal SleepAborted")
}

func TestActivityDuringTheDrainCallsItOff(t *testing.T) {
	f := newSleepFixture(t, "30s")
	status := f.drainNow()
	f.events()
	f.clock.Step(time.Second)
	lease, err := f.kube.CoordinationV1().Leases("shop").Get(context.Background(), activity.LeaseName("Deployment", "web"), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the controller did not create the activity Lease: %v", err)
	}
	lease.Spec.RenewTime = &metav1.MicroTime{Time: f.clock.Now()}
	lease.ResourceVersion = nextVersion(lease.ResourceVersion)
	if _, err := f.kube.CoordinationV1().Leases("shop").Update(context.Background(), lease, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	key := "shop/" + lease.Name
	deadline := time.Now().Add(5 * time.Second) // the fake's watch delivers within milliseconds
	for f.ctrl.sleeps.lastActivity(key).Before(status.DrainingSince.Time) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	f.renewMember(activity.DrainMark("shop", "web", status.DrainingSince.Time))
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if len(f.scaler.zeroCalls) != 0 {
		t.Fatal("scaled to zero after activity during the drain")
	}
	expectCondition(t, f.lastStatus(), v1alpha1.ConditionSleep, metav1.ConditionFalse, v1alpha1.ReasonSleepAborted)
}

func TestInvalidIdleAfterIsReported(t *testing.T) {
	for _, raw := range []string{"10s", "soon"} {
		t.Run(raw, func(t *testing.T) {
			f := newSleepFixture(t, raw)
			if err := f.sync(); err != nil {
				t.Fatal(err)
			}
			status := f.lastStatus()
			if status.Phase != v1alpha1.PhaseReady {
				t.Fatalf("phase %s, want Ready", status.Phase)
			}
			expectCondition(t, status, v1alpha1.ConditionSleep, metav1.ConditionFalse, v1alpha1.ReasonInvalidIdleAfter)
			f.expectEvents("Warning InvalidIdleAfter")
			// Reported once: the next pass writes nothing.
			f.applyLastWrite()
			if err := f.sync(); err != nil {
				t.Fatal(err)
			}
			if n := len(f.statusWrites()); n != 0 {
				t.Errorf("%d more status writes for the same refusal", n)
			}
		})
	}
}

func TestUndoneSleepsAreNotFoughtForever(t *testing.T) {
	f := newSleepFixture(t, "30s")
	asleep := readyRequest()
	asleep.ResourceVersion = "10"
	asleep.Status.Phase = v1alpha1.PhaseAsleep
	meta.SetStatusCondition(&asleep.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse,
		Reason: v1alpha1.ReasonAsleep, ObservedGeneration: 1, LastTransitionTime: metav1.Time{Time: t0}})
	for i := range maxOverrides {
		// Something scaled the sleeping target up, without a call.
		asleep.ResourceVersion = nextVersion(asleep.ResourceVersion)
		if err := f.put(asleep.DeepCopy()); err != nil {
			t.Fatal(err)
		}
		f.client.ClearActions()
		if err := f.sync(); err != nil {
			t.Fatal(err)
		}
		status := f.lastStatus()
		if status.Phase != v1alpha1.PhaseReady {
			t.Fatalf("undone sleep %d: phase %s, want Ready", i+1, status.Phase)
		}
		want := v1alpha1.ReasonSleepAborted
		if i+1 == maxOverrides {
			want = v1alpha1.ReasonSleepOverridden
		}
		expectCondition(t, status, v1alpha1.ConditionSleep, metav1.ConditionFalse, want)
	}
	f.events()
	// Given up: however idle, the target is not drained again until its annotation changes.
	f.applyLastWrite()
	f.clock.Step(time.Hour)
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if n := len(f.statusWrites()); n != 0 {
		t.Fatalf("%d status writes for a target the controller gave up on", n)
	}
}

// The controller's own scale to zero is not taken for its undoing: until the cache holds that
// write, it still shows the target as it was before the sleep, ready, which is not something
// else having scaled it up again.
func TestStaleCacheAfterASleepIsNotAnOverride(t *testing.T) {
	f := newSleepFixture(t, "30s")
	before := scaling.InventoryEntry{ResourceVersion: "41",
		State:       scaling.TargetState{Exists: true, Current: true, Replicas: 1, ReadyReplicas: 1},
		Annotations: map[string]string{v1alpha1.AnnotationMaxReplicas: "1", v1alpha1.AnnotationIdleAfter: "30s"}}
	f.inventory.set("web", before)
	status := f.drainNow()
	f.renewMember(activity.DrainMark("shop", "web", status.DrainingSince.Time))
	f.scaler.zeroRV = "42"
	f.client.ClearActions()
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if asleep := f.lastStatus(); asleep.Phase != v1alpha1.PhaseAsleep {
		t.Fatalf("phase %s, want Asleep", asleep.Phase)
	}
	f.applyLastWrite()
	f.events()

	// The cache has not seen the scale to zero yet.
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if writes := f.statusWrites(); len(writes) != 0 {
		t.Fatalf("the pre-sleep cache entry (resourceVersion 41) was taken for the target now: %+v", writes[0].Status)
	}
	// It has, then something else scales the target up and it becomes ready: that is an undone
	// sleep.
	at0 := before
	at0.ResourceVersion, at0.State.Replicas, at0.State.ReadyReplicas = "42", 0, 0
	f.inventory.set("web", at0)
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if n := len(f.statusWrites()); n != 0 {
		t.Fatalf("%d status writes for a target asleep at zero", n)
	}
	up := before
	up.ResourceVersion = "44"
	f.inventory.set("web", up)
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if status := f.lastStatus(); status.Phase != v1alpha1.PhaseReady {
		t.Fatalf("phase %s after something else made the target ready, want Ready", status.Phase)
	}
}
