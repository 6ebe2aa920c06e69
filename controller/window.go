package controller

import (
	"sync"
	"time"
)

// rescaleWindow enforces at most one scale write per target per rescale duration. It remembers
// targets only for one window after their last write, so it stays as small as the set of
// targets scaled recently.
type rescaleWindow struct {
	duration time.Duration

	mu        sync.Mutex
	lastWrite map[string]time.Time
}

func newRescaleWindow(duration time.Duration) *rescaleWindow {
	return &rescaleWindow{duration: duration, lastWrite: map[string]time.Time{}}
}

// wait returns how long a write to target must wait at now. persisted is the last write time
// recorded in status, which survives controller restarts; the later of the two counts.
func (w *rescaleWindow) wait(target string, persisted time.Time, now time.Time) time.Duration {
	w.mu.Lock()
	last := w.lastWrite[target]
	w.mu.Unlock()
	if persisted.After(last) {
		last = persisted
	}
	if last.IsZero() {
		return 0
	}
	if remaining := last.Add(w.duration).Sub(now); remaining > 0 {
		return remaining
	}
	return 0
}

// record notes a write to target at now and drops targets whose window has passed.
func (w *rescaleWindow) record(target string, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for t, last := range w.lastWrite {
		if now.Sub(last) >= w.duration {
			delete(w.lastWrite, t)
		}
	}
	w.lastWrite[target] = now
}
