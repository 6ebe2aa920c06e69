package controller

import (
	"strconv"
	"sync"

	"k8s.io/client-go/tools/cache"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
)

// ownWrites remembers the controller's own status writes until the informer has caught up with
// them, so that a sync running in between neither acts on stale status nor conflicts with
// itself. An entry lives from a write until the informer delivers that object (or a newer one,
// or its deletion): milliseconds. Memory follows the writes in flight, never the number of
// requests written over time, which an LRU of written objects (cache.MutationCache) would hold
// on to until evicted.
type ownWrites struct {
	mu      sync.Mutex
	written map[cache.ObjectName]*v1alpha1.ScaleRequest
}

func newOwnWrites() *ownWrites {
	return &ownWrites{written: map[cache.ObjectName]*v1alpha1.ScaleRequest{}}
}

// record remembers sr, the API server's answer to a status write.
func (w *ownWrites) record(sr *v1alpha1.ScaleRequest) {
	sr.ManagedFields = nil
	w.mu.Lock()
	defer w.mu.Unlock()
	w.written[cache.ObjectName{Namespace: sr.Namespace, Name: sr.Name}] = sr
}

// newest returns the newer of the informer's copy and the controller's last write of it.
func (w *ownWrites) newest(informed *v1alpha1.ScaleRequest) *v1alpha1.ScaleRequest {
	key := cache.ObjectName{Namespace: informed.Namespace, Name: informed.Name}
	w.mu.Lock()
	defer w.mu.Unlock()
	written, ok := w.written[key]
	if !ok {
		return informed
	}
	if newerWrite(written, informed) {
		return written
	}
	delete(w.written, key)
	return informed
}

// observed drops the write of an object the informer has caught up with.
func (w *ownWrites) observed(informed *v1alpha1.ScaleRequest) {
	key := cache.ObjectName{Namespace: informed.Namespace, Name: informed.Name}
	w.mu.Lock()
	defer w.mu.Unlock()
	if written, ok := w.written[key]; ok && !newerWrite(written, informed) {
		delete(w.written, key)
	}
}

// forget drops the write of a deleted object.
func (w *ownWrites) forget(key cache.ObjectName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.written, key)
}

// len is the number of writes the informer has not delivered yet.
func (w *ownWrites) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.written)
}

// newerWrite reports whether written is a later version of the same object than informed.
// Resource versions are compared as integers, as etcd issues them; anything else counts as
// not newer, which falls back to the informer's copy.
func newerWrite(written, informed *v1alpha1.ScaleRequest) bool {
	if written.UID != informed.UID {
		return false
	}
	w, err1 := strconv.ParseUint(written.ResourceVersion, 10, 64)
	i, err2 := strconv.ParseUint(informed.ResourceVersion, 10, 64)
	return err1 == nil && err2 == nil && w > i
}

// dropManagedFields is the ScaleRequest informer's transform: the controller never reads
// metadata.managedFields, which would otherwise be most of what its cache holds per request.
func dropManagedFields(obj any) (any, error) {
	if sr, ok := obj.(*v1alpha1.ScaleRequest); ok {
		sr.ManagedFields = nil
	}
	return obj, nil
}
