package controller

import (
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/scaling"
)

var webKey = cache.ObjectName{Namespace: "shop", Name: "web"}

// idleRequest is a request whose signal was served and whose target was set back to zero.
func idleRequest() *v1alpha1.ScaleRequest {
	sr := readyRequest()
	sr.Status.Phase = v1alpha1.PhaseIdle
	sr.Status.ReadyReplicas = 0
	meta.SetStatusCondition(&sr.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse,
		Reason: v1alpha1.ReasonTargetScaledDown, ObservedGeneration: 1, LastTransitionTime: metav1.Time{Time: t0}})
	return sr
}

// A Ready or Idle request whose target leaves the inventory fails: deleted, TargetNotFound;
// still there but no longer marked by its owner, NotOptedIn. Either is re-checked once per
// window, not final.
func TestFollowedRequestFailsWhenItsTargetLeaves(t *testing.T) {
	notFound := &scaling.Error{Reason: scaling.ReasonTargetNotFound, Err: errors.New("deployments.apps \"web\" not found")}
	for _, tc := range []struct {
		name    string
		request *v1alpha1.ScaleRequest
		readErr error
		reason  string
		event   string
	}{
		{"Ready, deleted", readyRequest(), notFound, v1alpha1.ReasonTargetNotFound,
			"Warning TargetNotFound apps/v1 Deployment/web was deleted after this request was served"},
		{"Idle, deleted", idleRequest(), notFound, v1alpha1.ReasonTargetNotFound,
			"Warning TargetNotFound apps/v1 Deployment/web was deleted after this request was served"},
		{"Ready, mark removed", readyRequest(), nil, v1alpha1.ReasonNotOptedIn,
			"Warning NotOptedIn Deployment/web has not opted in to being woken by ScaleRequests; its owner can allow it with: kubectl label deployments.apps web -n shop zerowake.dev/wake=true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, DefaultAllowedKinds, tc.request)
			f.ctrl.config.RequireOptIn = true
			f.scaler.current = scaling.Result{Resource: deployments, Replicas: 1}
			f.scaler.err = tc.readErr
			if err := f.sync(); err != nil {
				t.Fatal(err)
			}
			status := f.lastStatus()
			if status.Phase != v1alpha1.PhaseFailed {
				t.Fatalf("phase %s for a request whose target left the inventory, want Failed", status.Phase)
			}
			expectCondition(t, status, v1alpha1.ConditionScaled, metav1.ConditionFalse, tc.reason)
			if c := meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionScaled); c.ObservedGeneration != 1 {
				t.Fatalf("Scaled condition for generation %d, want the current one", c.ObservedGeneration)
			}
			if meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionReady) != nil {
				t.Fatal("Ready condition kept for a target that left")
			}
			if len(f.scaler.calls) != 0 || len(f.scaler.reads) != 1 {
				t.Fatalf("%d scale writes and %d reads, want one read to tell deleted from unmarked", len(f.scaler.calls), len(f.scaler.reads))
			}
			f.expectEvents(tc.event)
			f.applyLastWrite()
			f.client.ClearActions()
			if src := f.ctrl.sourceFor("shop"); settled(f.ctrl.writes.newest(mustGet(t, src.indexer))) {
				t.Fatal("the failure is final; it must be re-checked")
			}
			f.expectRequeueAfter(window)
		})
	}
}

func mustGet(t *testing.T, indexer cache.Indexer) *v1alpha1.ScaleRequest {
	t.Helper()
	obj, ok, err := indexer.GetByKey(webKey.String())
	if err != nil || !ok {
		t.Fatalf("shop/web not in the cache: %v", err)
	}
	return obj.(*v1alpha1.ScaleRequest)
}

// Without opt-in the inventory holds every workload of a kind: a target it does not hold yet
// but /scale answers for is one whose creation it has not seen, and the request stays as it is.
func TestFollowedRequestWaitsForTheInventoryWithoutOptIn(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, readyRequest())
	f.scaler.current = scaling.Result{Resource: deployments, Replicas: 1}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if writes := f.statusWrites(); len(writes) != 0 {
		t.Fatalf("wrote %s for a target /scale still answers for", writes[0].Status.Phase)
	}
}

// At start-up, a followed request whose target went away while no controller ran (no event
// will come for it) is queued; one whose target the inventory holds is left to the
// inventory's first list.
func TestStartupQueuesRequestsWhoseTargetLeft(t *testing.T) {
	gone := readyRequest()
	kept := readyRequest()
	kept.Name, kept.Spec.ScaleTargetRef.Name = "api", "api"
	f := newFixture(t, DefaultAllowedKinds, gone, kept)
	f.inventory.set("api", scaling.InventoryEntry{State: scaling.TargetState{Exists: true, Current: true, Replicas: 1, ReadyReplicas: 1}})
	f.ctrl.queueLeftTargets(f.ctx)
	if f.ctrl.queue.Len() != 1 {
		t.Fatalf("queued %d requests, want the one whose target is gone", f.ctrl.queue.Len())
	}
	if key, _ := f.ctrl.queue.Get(); key != webKey {
		t.Fatalf("queued %v", key)
	}
}

// A Ready request whose target keeps its replicas but loses their readiness (a crash loop:
// replicas 1, ready 0) is not Ready: it is Scaling with TargetNotReady and a Warning, and Ready
// again (without a cold start) when the pods are. No API call either way.
func TestReadyRequestFollowsLostReadiness(t *testing.T) {
	readyTime := metav1.Time{Time: t0.Add(-time.Minute)}
	sr := readyRequest()
	sr.Status.ReadyTime = &readyTime
	sr.Status.ColdStartDuration = &metav1.Duration{Duration: time.Second}
	f := newFixture(t, DefaultAllowedKinds, sr)
	crashLoop := scaling.TargetState{Exists: true, Current: true, Replicas: 1, ReadyReplicas: 0}
	f.inventory.set("web", scaling.InventoryEntry{State: crashLoop})
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	status := f.lastStatus()
	if status.Phase != v1alpha1.PhaseScaling || status.ReadyReplicas != 0 || status.Replicas != 1 {
		t.Fatalf("a Ready request whose target has 0/1 ready reads %s with %d/%d", status.Phase, status.ReadyReplicas, status.Replicas)
	}
	expectCondition(t, status, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonTargetNotReady)
	expectCondition(t, status, v1alpha1.ConditionScaled, metav1.ConditionTrue, v1alpha1.ReasonScaledFromZero)
	f.expectEvents("Warning TargetNotReady Deployment/web has 0/1 ready replicas after it was ready")
	if len(f.scaler.calls) != 0 || len(f.scaler.reads) != 0 {
		t.Fatalf("following readiness cost API calls: %d scales, %d reads", len(f.scaler.calls), len(f.scaler.reads))
	}
	f.applyLastWrite()
	if sr := mustGet(t, f.ctrl.sourceFor("shop").indexer); !settled(sr) || !indexed(sr) {
		t.Fatal("a request that lost readiness must keep following its target from the inventory")
	}
	f.client.ClearActions()

	f.inventory.set("web", scaling.InventoryEntry{State: scaling.TargetState{Exists: true, Current: true, Replicas: 1, ReadyReplicas: 1}})
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	status = f.lastStatus()
	if status.Phase != v1alpha1.PhaseReady || status.ReadyReplicas != 1 {
		t.Fatalf("phase %s with %d ready after the pods are ready again", status.Phase, status.ReadyReplicas)
	}
	expectCondition(t, status, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonTargetReady)
	if status.ReadyTime == nil || !status.ReadyTime.Equal(&readyTime) || status.ColdStartDuration == nil || status.ColdStartDuration.Duration != time.Second {
		t.Fatalf("readyTime %v, cold start %v: the first readiness of the signal and its cold start must stay", status.ReadyTime, status.ColdStartDuration)
	}
	f.expectEvents("Normal TargetReady Deployment/web has 1/1 ready replicas again")
}

// The ready timeout runs from the moment readiness was lost, not from each pass: a request
// whose target stays unready fails with ReadyTimeout one ready timeout after it lost it, and
// that failure is final (callers get an answer rather than waiting for ever).
func TestLostReadinessTimesOutFromWhenItWasLost(t *testing.T) {
	sr := readyRequest()
	sr.Spec.MinReplicas = 3
	f := newFixture(t, DefaultAllowedKinds, sr)
	f.inventory.set("web", scaling.InventoryEntry{State: scaling.TargetState{Exists: true, Current: true, Replicas: 3, ReadyReplicas: 2}})
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	expectCondition(t, f.lastStatus(), v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonTargetNotReady)
	f.events()
	f.applyLastWrite()
	f.client.ClearActions()
	if f.ctrl.queue.Len() != 0 {
		t.Fatal("queued at once; the deadline is the only re-check due")
	}

	// Two minutes later one more pod is gone: the count is written, the deadline stays.
	f.clock.Step(2 * time.Minute)
	f.inventory.set("web", scaling.InventoryEntry{State: scaling.TargetState{Exists: true, Current: true, Replicas: 3, ReadyReplicas: 1}})
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	status := f.lastStatus()
	if status.Phase != v1alpha1.PhaseScaling || status.ReadyReplicas != 1 {
		t.Fatalf("phase %s with %d ready, want Scaling with 1", status.Phase, status.ReadyReplicas)
	}
	if c := meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionReady); !c.LastTransitionTime.Time.Equal(t0) {
		t.Fatalf("the loss of readiness moved to %s; the deadline would restart", c.LastTransitionTime.Time)
	}
	f.expectEvents()
	f.applyLastWrite()
	f.client.ClearActions()
	// Its re-check is due at t0+readyTimeout, three minutes on.
	f.expectRequeueAfter(readyTimeout - 2*time.Minute)
	f.ctrl.queue.Get()

	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	status = f.lastStatus()
	if status.Phase != v1alpha1.PhaseFailed {
		t.Fatalf("phase %s one ready timeout after readiness was lost, want Failed", status.Phase)
	}
	expectCondition(t, status, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonReadyTimeout)
	f.expectEvents("Warning ReadyTimeout Deployment/web did not have 3 ready replicas again within 5m0s of losing them (has 1 ready of 3)")
	f.applyLastWrite()
	if !settled(mustGet(t, f.ctrl.sourceFor("shop").indexer)) {
		t.Fatal("a ReadyTimeout after lost readiness is final until the next signal")
	}
}

// While the target's own controller has not observed its latest spec (a rollout just began),
// its ready count may predate the change: a Ready request stays Ready.
func TestReadyRequestIgnoresAReadyCountNotYetCurrent(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, readyRequest())
	f.inventory.set("web", scaling.InventoryEntry{State: scaling.TargetState{Exists: true, Current: false, Replicas: 1, ReadyReplicas: 0}})
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if writes := f.statusWrites(); len(writes) != 0 {
		t.Fatalf("wrote %s from a ready count the target's controller has not brought up to date", writes[0].Status.Phase)
	}
}

// A request that lost readiness follows its target down too: set below its minimum, it is Idle.
func TestLostReadinessThenScaledDownIsIdle(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, readyRequest())
	f.inventory.set("web", scaling.InventoryEntry{State: scaling.TargetState{Exists: true, Current: true, Replicas: 1}})
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	f.applyLastWrite()
	f.client.ClearActions()
	f.events()
	f.inventory.set("web", scaling.InventoryEntry{State: scaling.TargetState{Exists: true, Current: true, Replicas: 0}})
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	status := f.lastStatus()
	if status.Phase != v1alpha1.PhaseIdle {
		t.Fatalf("phase %s, want Idle", status.Phase)
	}
	expectCondition(t, status, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonTargetScaledDown)
}

// The inventory's notification reaches a request that lost readiness also when active requests
// have watches of their own.
func TestTargetChangeReachesRequestsThatLostReadiness(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, readyRequest())
	f.inventory.set("web", scaling.InventoryEntry{State: scaling.TargetState{Exists: true, Current: true, Replicas: 1}})
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	f.applyLastWrite()
	f.ctrl.OnTargetChange(schema.GroupKind{Group: "apps", Kind: "Deployment"}, "shop", "web")
	if f.ctrl.queue.Len() != 1 {
		t.Fatalf("queued %d requests, want the one that lost readiness", f.ctrl.queue.Len())
	}
}

// Without a cap of the owner's, a wake may ask for DefaultMaxReplicas; above it the request is
// refused with a message naming the default and how the owner raises it. The owner's own cap
// wins either way.
func TestDefaultMaxReplicas(t *testing.T) {
	sr := newRequest("Deployment")
	sr.Spec.MinReplicas = 3
	f := newFixture(t, DefaultAllowedKinds, sr)
	f.ctrl.config.RequireOptIn = true
	f.ctrl.config.DefaultMaxReplicas = 1
	f.inventory.set("web", scaling.InventoryEntry{State: scaling.TargetState{Exists: true, Current: true}})
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	status := f.lastStatus()
	expectCondition(t, status, v1alpha1.ConditionScaled, metav1.ConditionFalse, v1alpha1.ReasonAboveOwnerCap)
	if status.Phase != v1alpha1.PhaseFailed || len(f.scaler.calls) != 0 {
		t.Fatalf("phase %s, %d scale writes: a wake above the default cap must scale nothing", status.Phase, len(f.scaler.calls))
	}
	msg := meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionScaled).Message
	for _, want := range []string{"minReplicas 3 is above the 1", "--default-max-replicas", "kubectl annotate deployments.apps web -n shop zerowake.dev/max-replicas=3"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not say %q", msg, want)
		}
	}
	f.events()
	f.applyLastWrite()
	f.client.ClearActions()

	f.inventory.set("web", scaling.InventoryEntry{State: scaling.TargetState{Exists: true, Current: true},
		Annotations: map[string]string{v1alpha1.AnnotationMaxReplicas: "3"}})
	f.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: 0, Replicas: 3, Scaled: true}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	expectCondition(t, f.lastStatus(), v1alpha1.ConditionScaled, metav1.ConditionTrue, v1alpha1.ReasonScaledFromZero)
}
