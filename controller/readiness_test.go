package controller

import (
	"context"
	"testing"

	"github.com/zerowake/zerowake/scaling"
)

// The inventory's entry speaks for the request's own write only once it holds that write.
func TestInventoryFollowerWaitsForTheWrite(t *testing.T) {
	inv := &fakeInventory{entries: map[string]scaling.InventoryEntry{}}
	f := newInventoryFollower(inv)
	const id = "shop/apps/Deployment/web"
	if _, seen := f.State(id); seen {
		t.Fatal("a target not followed is seen")
	}

	inv.set("web", scaling.InventoryEntry{ResourceVersion: "41", State: scaling.TargetState{Exists: true, Current: true}})
	f.Watch(context.Background(), id, deployments, "shop", "web", "42")
	if _, seen := f.State(id); seen {
		t.Fatal("the cache from before the scale write is taken for the target after it")
	}

	after := scaling.TargetState{Exists: true, Current: true, Replicas: 1}
	inv.set("web", scaling.InventoryEntry{ResourceVersion: "42", State: after})
	if state, seen := f.State(id); !seen || state != after {
		t.Fatalf("State = %+v, %v; want %+v, true", state, seen, after)
	}

	// Following again without a write keeps waiting for the write already made.
	inv.set("web", scaling.InventoryEntry{ResourceVersion: "40", State: after})
	f.Watch(context.Background(), id, deployments, "shop", "web", "")
	if _, seen := f.State(id); seen {
		t.Fatal("following again forgot the write it waits for")
	}

	// Gone from the inventory: deleted, or no longer marked.
	delete(inv.entries, "shop/web")
	if state, seen := f.State(id); !seen || state.Exists {
		t.Fatalf("State = %+v, %v; want a target that does not exist", state, seen)
	}

	f.Forget(id)
	if f.Len() != 0 {
		t.Fatalf("%d targets followed after Forget", f.Len())
	}
}
