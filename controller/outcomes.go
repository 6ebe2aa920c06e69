package controller

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/zerowake/zerowake/scaling"
)

// scaleOutcome is what a scale attempt for one signal (a request's uid and generation) found or
// wrote, whose status write has not succeeded yet. A zero writtenAt means nothing was written
// (the target was already up).
type scaleOutcome struct {
	uid        types.UID
	generation int64
	result     scaling.Result
	fight      bool
	writtenAt  time.Time
	// unknownWriteTime is set for a predecessor's write whose time the API server did not
	// record: writtenAt is then when it was found, which only the window uses.
	unknownWriteTime bool
	// readySeenAt is when this controller first saw the target ready for the signal, if its
	// Ready status write was held since: readyTime and the cold start end there, not at the
	// write.
	readySeenAt time.Time
}

// pendingOutcomes keeps each scale write until a status write carries it. Without it, a status
// write that fails after a scale (a conflict, an API error) would be retried against a target
// that is already up, and reported as AlreadyScaled: no ScaledFromZero event, no lastScaleTime
// (so the window would not survive a restart), the wrong previousReplicas, the scale counted
// twice. Entries live from a scale write to the next successful status write: milliseconds.
type pendingOutcomes struct {
	mu       sync.Mutex
	outcomes map[cache.ObjectName]scaleOutcome
}

func newPendingOutcomes() *pendingOutcomes {
	return &pendingOutcomes{outcomes: map[cache.ObjectName]scaleOutcome{}}
}

func (p *pendingOutcomes) put(key cache.ObjectName, o scaleOutcome) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.outcomes[key] = o
}

// get returns the pending outcome of the signal (uid, generation); an outcome of another signal
// is dropped, since a new signal is reported afresh.
func (p *pendingOutcomes) get(key cache.ObjectName, uid types.UID, generation int64) (scaleOutcome, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	o, ok := p.outcomes[key]
	if !ok {
		return scaleOutcome{}, false
	}
	if o.uid != uid || o.generation != generation {
		delete(p.outcomes, key)
		return scaleOutcome{}, false
	}
	return o, true
}

// sawReady records that the signal's target was seen ready at now, unless an earlier sighting
// is kept, and returns the first sighting. Without a pending outcome nothing is held, so the
// status write that follows is made now and now is the sighting.
func (p *pendingOutcomes) sawReady(key cache.ObjectName, uid types.UID, generation int64, now time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	o, ok := p.outcomes[key]
	if !ok || o.uid != uid || o.generation != generation {
		return now
	}
	if o.readySeenAt.IsZero() || now.Before(o.readySeenAt) {
		o.readySeenAt = now
		p.outcomes[key] = o
	}
	return o.readySeenAt
}

// notReady forgets a sighting of readiness that no longer holds: the target lost ready
// replicas before its Ready write went out, so the next sighting counts.
func (p *pendingOutcomes) notReady(key cache.ObjectName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if o, ok := p.outcomes[key]; ok && !o.readySeenAt.IsZero() {
		o.readySeenAt = time.Time{}
		p.outcomes[key] = o
	}
}

// keys lists the requests with a scale write whose status write is still to come.
func (p *pendingOutcomes) keys() []cache.ObjectName {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := make([]cache.ObjectName, 0, len(p.outcomes))
	for key := range p.outcomes {
		keys = append(keys, key)
	}
	return keys
}

func (p *pendingOutcomes) forget(key cache.ObjectName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.outcomes, key)
}

func (p *pendingOutcomes) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.outcomes)
}
