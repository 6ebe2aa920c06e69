package controller

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/zerowake/zerowake/scaling"
)

// inventoryFollower follows active requests' targets in the Inventory's shared cache instead of
// with a watch per target. A wake then costs the API server no LIST or WATCH, and the
// controller no goroutines or buffers per target, however many targets a burst wakes at once;
// the Inventory's changes reach the requests through OnTargetChange.
type inventoryFollower struct {
	inventory Inventory

	mu      sync.Mutex
	targets map[string]followedTarget
}

type followedTarget struct {
	gk        schema.GroupKind
	resource  schema.GroupVersionResource
	namespace string
	name      string
	// after is the resourceVersion of the scale write the request made, if any: the cache
	// must have caught up with it before its state says anything about the write's effect.
	after string
}

func newInventoryFollower(inventory Inventory) *inventoryFollower {
	return &inventoryFollower{inventory: inventory, targets: map[string]followedTarget{}}
}

// Watch follows the target id names; it costs nothing but an entry here.
func (f *inventoryFollower) Watch(_ context.Context, id string, resource schema.GroupVersionResource, namespace, name, after string) {
	gk, ok := groupKindOf(id)
	if !ok {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.targets[id]; ok && t.resource == resource && t.name == name && after == "" {
		return
	}
	f.targets[id] = followedTarget{gk: gk, resource: resource, namespace: namespace, name: name, after: after}
}

func (f *inventoryFollower) Forget(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.targets, id)
}

// State reads the target from the Inventory. ok is false while the cache has not yet seen the
// request's own scale write. A target the cache does not hold (deleted, or its mark removed)
// reads as not existing.
func (f *inventoryFollower) State(id string) (scaling.TargetState, bool) {
	f.mu.Lock()
	t, ok := f.targets[id]
	f.mu.Unlock()
	if !ok {
		return scaling.TargetState{}, false
	}
	// The request's own wake path has filled the kind's cache already; the timeout only
	// guards against one that has not synced, which then reads as not seen yet.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	entry, found, err := f.inventory.Lookup(ctx, t.gk, t.resource, t.namespace, t.name)
	switch {
	case err != nil:
		return scaling.TargetState{}, false
	case !found:
		return scaling.TargetState{}, true
	case !atOrAfter(entry.ResourceVersion, t.after):
		return scaling.TargetState{}, false
	}
	return entry.State, true
}

// Len is the number of targets followed.
func (f *inventoryFollower) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.targets)
}

// atOrAfter reports whether resourceVersion rv is at or after after. Resource versions are
// compared as the integers etcd issues; one that is not an integer cannot be ordered and is
// taken as current.
func atOrAfter(rv, after string) bool {
	if after == "" {
		return true
	}
	a, err1 := strconv.ParseUint(after, 10, 64)
	r, err2 := strconv.ParseUint(rv, 10, 64)
	if err1 != nil || err2 != nil {
		return true
	}
	return r >= a
}

// groupKindOf reads the group and kind from a target id (see targetID).
func groupKindOf(id string) (schema.GroupKind, bool) {
	parts := strings.SplitN(id, "/", 4)
	if len(parts) != 4 {
		return schema.GroupKind{}, false
	}
	return schema.GroupKind{Group: parts[1], Kind: parts[2]}, true
}
