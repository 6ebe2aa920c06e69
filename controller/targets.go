package controller

import (
	"slices"
	"sync"

	"k8s.io/client-go/tools/cache"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
)

// requestsByTarget indexes ScaleRequests by the target they name, so a target's change reaches
// every request waiting for it and the Ready and Idle requests that follow it. Requests that
// failed for good, which a target's change cannot concern, are left out.
//
// It stands in for a client-go indexer index, which keeps a set (a map) per indexed value:
// with one request per target, as is usual, those sets were most of the index's memory, about
// 330 bytes a request against some 100 here, and the index holds every settled request.
// The informer's event handlers keep it, before they act on an event, so a target's change
// seen after a request's event finds the request.
type requestsByTarget struct {
	mu       sync.RWMutex
	byTarget map[string][]cache.ObjectName
}

func newRequestsByTarget() *requestsByTarget {
	return &requestsByTarget{byTarget: map[string][]cache.ObjectName{}}
}

// indexed reports whether a target's change can concern sr.
func indexed(sr *v1alpha1.ScaleRequest) bool {
	return !(sr.Status.Phase == v1alpha1.PhaseFailed && settled(sr))
}

// update moves a request from its old version's entry to its new one's; old is nil for an
// addition, current nil for a deletion.
func (r *requestsByTarget) update(old, current *v1alpha1.ScaleRequest) {
	if old != nil && current != nil && old.Spec.ScaleTargetRef == current.Spec.ScaleTargetRef && indexed(old) == indexed(current) {
		// Most updates (status writes above all) leave the entry as it is.
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old != nil {
		r.remove(targetID(old), cache.ObjectName{Namespace: old.Namespace, Name: old.Name})
	}
	if current != nil && indexed(current) {
		id, key := targetID(current), cache.ObjectName{Namespace: current.Namespace, Name: current.Name}
		if keys := r.byTarget[id]; !slices.Contains(keys, key) {
			r.byTarget[id] = append(keys, key)
		}
	}
}

func (r *requestsByTarget) remove(id string, key cache.ObjectName) {
	keys := r.byTarget[id]
	i := slices.Index(keys, key)
	switch {
	case i < 0:
	case len(keys) == 1:
		delete(r.byTarget, id)
	default:
		// In place: requests hands out copies, never this slice.
		r.byTarget[id] = slices.Delete(keys, i, i+1)
	}
}

// requests returns the requests naming the target id.
func (r *requestsByTarget) requests(id string) []cache.ObjectName {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Clone(r.byTarget[id])
}

// len is the number of targets indexed.
func (r *requestsByTarget) len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.byTarget)
}
