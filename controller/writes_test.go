package controller

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/scaling"
)

// readyRequest is scaledRequest(t0) after the controller wrote it Ready, at resourceVersion 2.
func readyRequest() *v1alpha1.ScaleRequest {
	sr := scaledRequest(t0)
	sr.ResourceVersion = "2"
	sr.Status.Phase = v1alpha1.PhaseReady
	sr.Status.ReadyReplicas = 1
	for i := range sr.Status.Conditions {
		if sr.Status.Conditions[i].Type == v1alpha1.ConditionReady {
			sr.Status.Conditions[i].Status = metav1.ConditionTrue
			sr.Status.Conditions[i].Reason = v1alpha1.ReasonTargetReady
		}
	}
	return sr
}

func TestOwnWritesLiveUntilTheInformerCatchesUp(t *testing.T) {
	w := newOwnWrites()
	informed := scaledRequest(t0) // resourceVersion 1
	written := readyRequest()     // resourceVersion 2
	written.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: FieldManager}}
	w.record(written)
	if written.ManagedFields != nil {
		t.Error("a recorded write keeps its managedFields")
	}
	if got := w.newest(informed); got != written {
		t.Fatalf("newest: got resourceVersion %s, want the write (2)", got.ResourceVersion)
	}

	w.observed(informed) // an older event arriving late changes nothing
	if w.len() != 1 {
		t.Fatalf("write forgotten on an older informer event")
	}
	caughtUp := readyRequest()
	w.observed(caughtUp)
	if w.len() != 0 {
		t.Fatalf("write kept after the informer delivered it: %d entries", w.len())
	}
	if got := w.newest(informed); got != informed {
		t.Fatal("newest returned a forgotten write")
	}
}

func TestOwnWriteOfAnotherObjectIsIgnored(t *testing.T) {
	w := newOwnWrites()
	written := readyRequest()
	written.UID, written.ResourceVersion = types.UID("old"), "9"
	w.record(written)
	recreated := scaledRequest(t0)
	recreated.UID = "new"
	if got := w.newest(recreated); got != recreated {
		t.Fatal("the write of a deleted object was returned for its successor")
	}
	if w.len() != 0 {
		t.Fatal("the write of a deleted object was kept")
	}
	w.record(readyRequest())
	w.forget(cache.ObjectName{Namespace: "shop", Name: "web"})
	if w.len() != 0 {
		t.Fatal("forget kept the write")
	}
}

// TestSyncReadsItsOwnWrite: a sync that runs before the informer has delivered the
// controller's own Ready write sees the request settled, and costs nothing.
func TestSyncReadsItsOwnWrite(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, scaledRequest(t0))
	f.ctrl.writes.record(readyRequest())
	// The target is ready, as the write says; a target gone from the inventory would cost a read.
	f.inventory.set("web", scaling.InventoryEntry{State: scaling.TargetState{Exists: true, Current: true, Replicas: 1, ReadyReplicas: 1}})
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if len(f.client.Actions()) != 0 || len(f.scaler.calls) != 0 || len(f.scaler.reads) != 0 {
		t.Fatalf("a request this controller wrote Ready caused API calls: %v", f.client.Actions())
	}
}

// TestHandlersForgetObservedWrites: the informer's events bound the remembered writes to those
// in flight.
func TestHandlersForgetObservedWrites(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds)
	f.ctrl.writes.record(readyRequest())
	f.ctrl.onUpdate(scaledRequest(t0), readyRequest())
	if n := f.ctrl.writes.len(); n != 0 {
		t.Fatalf("%d writes kept after the informer delivered them", n)
	}
	f.ctrl.writes.record(readyRequest())
	f.ctrl.onDelete(cache.DeletedFinalStateUnknown{Key: "shop/web", Obj: scaledRequest(t0)})
	if n := f.ctrl.writes.len(); n != 0 {
		t.Fatalf("%d writes kept after the request was deleted", n)
	}
}

func TestSettledRequestsAreNotQueued(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds)
	f.ctrl.onAdd(readyRequest())
	if f.ctrl.queue.Len() != 0 {
		t.Fatal("a settled request was queued when added")
	}
	f.ctrl.onAdd(scaledRequest(t0))
	if f.ctrl.queue.Len() != 1 {
		t.Fatal("an active request was not queued when added")
	}
}

func TestTargetIndexHoldsWhatATargetsChangeConcerns(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds)
	f.ctrl.onAdd(readyRequest())
	// A Ready request follows its target (it becomes Idle when the target is set back to
	// zero), so the target's changes must reach it; a final failure has nothing to follow.
	if keys := f.ctrl.targets.requests(webID); len(keys) != 1 || keys[0].Name != "web" {
		t.Fatalf("a Ready request was not indexed by target: %v", keys)
	}
	timedOut := scaledRequest(t0)
	timedOut.ResourceVersion = "3"
	timedOut.Status.Phase = v1alpha1.PhaseFailed
	meta.SetStatusCondition(&timedOut.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse,
		Reason: v1alpha1.ReasonReadyTimeout, ObservedGeneration: 1})
	f.ctrl.onUpdate(readyRequest(), timedOut)
	if keys := f.ctrl.targets.requests(webID); len(keys) != 0 || f.ctrl.targets.len() != 0 {
		t.Fatalf("a request that failed for good is still indexed by target: %v", keys)
	}
	// A settled request that gets a new signal is active again, and indexed.
	bumped := timedOut.DeepCopy()
	bumped.Generation, bumped.ResourceVersion = 2, "4"
	f.ctrl.onUpdate(timedOut, bumped)
	if keys := f.ctrl.targets.requests(webID); len(keys) != 1 {
		t.Fatalf("an active request was not indexed by target: %v", keys)
	}
	f.ctrl.onDelete(cache.DeletedFinalStateUnknown{Key: "shop/web", Obj: bumped})
	if n := f.ctrl.targets.len(); n != 0 {
		t.Fatalf("%d targets indexed after the request was deleted", n)
	}
}

func TestInformerDropsManagedFields(t *testing.T) {
	sr := scaledRequest(t0)
	sr.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "zerowake-wake", Time: &metav1.Time{Time: t0.Add(-time.Second)}}}
	out, err := dropManagedFields(sr)
	if err != nil || out.(*v1alpha1.ScaleRequest).ManagedFields != nil {
		t.Fatalf("managedFields kept: %v %v", out, err)
	}
	if _, err := dropManagedFields(cache.DeletedFinalStateUnknown{Key: "shop/web"}); err != nil {
		t.Fatal(err)
	}
}
