package controller

import (
	"sync"
	"time"

	"k8s.io/client-go/tools/cache"
)

// firstScales orders a burst's writes: scale writes first, status later. It knows the requests
// whose latest signal has not had its scale attempt yet, and holds back the readiness status
// writes of others while there are any, since a resolver waits on each of those scale writes
// and on none of the status writes (the target is serving already). Once the last pending
// request has had its attempt, the held writes go back to the queue, each once.
type firstScales struct {
	mu      sync.Mutex
	pending map[cache.ObjectName]struct{}
	held    map[cache.ObjectName]struct{}
}

func newFirstScales() *firstScales {
	return &firstScales{pending: map[cache.ObjectName]struct{}{}, held: map[cache.ObjectName]struct{}{}}
}

// expect records that key carries a signal whose scale attempt is still to come: it has not
// been looked at since it arrived.
func (f *firstScales) expect(key cache.ObjectName) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending[key] = struct{}{}
}

// attempted records that key's signal had its first look: its scale attempt (successful,
// failed, deferred or not needed), or the request is gone. If that was the last pending one, it returns the held requests, which are no longer
// held: their status writes may go.
func (f *firstScales) attempted(key cache.ObjectName) []cache.ObjectName {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.pending[key]; !ok {
		return nil
	}
	delete(f.pending, key)
	if len(f.pending) > 0 || len(f.held) == 0 {
		return nil
	}
	released := make([]cache.ObjectName, 0, len(f.held))
	for k := range f.held {
		released = append(released, k)
	}
	clear(f.held)
	return released
}

// hold holds key's status write if any scale attempt is pending, and reports whether it did;
// the last attempt releases it. Checking and holding under one lock means no release is missed.
func (f *firstScales) hold(key cache.ObjectName) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	others := len(f.pending)
	if _, ok := f.pending[key]; ok {
		others-- // its own attempt, just made: attempted releases the others' holds
	}
	if others == 0 {
		return false
	}
	f.held[key] = struct{}{}
	return true
}

// unhold drops key from the held writes once its status is written: under steady arrivals the
// last pending attempt may not come for a long time, and the held set must not keep every
// request written meanwhile.
func (f *firstScales) unhold(key cache.ObjectName) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.held, key)
}

// counts returns how many requests wait for their scale attempt and how many status writes are
// held for them.
func (f *firstScales) counts() (pending, held int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pending), len(f.held)
}

// readyHoldLimit is the longest a Ready status write is held once the controller has seen its
// target ready. Holding it at all only orders the queue (scale writes before status writes);
// it saves no write, since a held Ready write is still one write. Without a limit a steady
// stream of new signals would hold it to the end of its rescale window, and resolvers would
// wait for a target that was serving long before: the gate's default route timeout is that
// same window. One second is below what a resolver notices on a cold start that took at least
// the target's own start-up, and long enough for the scale writes of the signals that arrived
// meanwhile to go first; readyTime and the cold start are stamped when readiness was seen, so
// the hold does not show in them.
const readyHoldLimit = time.Second
