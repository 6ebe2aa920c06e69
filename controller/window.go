package controller

import (
	"sync"
	"time"
)

// rescaleWindow enforces at most one scale write per target per rescale duration, however many
// requests name the target and however many workers serve them: the check and the write are
// one reservation, so two workers cannot both find the window open. It remembers targets only
// for one window after their last write, so it stays as small as the set of targets scaled
// recently.
type rescaleWindow struct {
	duration time.Duration

	mu        sync.Mutex
	lastWrite map[string]time.Time
	// inFlight holds the targets a worker has reserved and not yet completed.
	inFlight map[string]struct{}
	// written lists the writes in the order they completed, oldest first from head, so that
	// dropping expired targets looks only at the expired writes and the first live one, not at
	// every target remembered: each completion used to scan them all, under the lock all
	// workers share, which made a burst quadratic. Workers complete a few milliseconds out of
	// time order at most, which only delays dropping a write by as much.
	written []windowWrite
	head    int
	// pruneVisits counts the writes looked at to drop expired ones.
	pruneVisits int
}

// windowWrite is one completed write to a target.
type windowWrite struct {
	target string
	at     time.Time
}

func newRescaleWindow(duration time.Duration) *rescaleWindow {
	return &rescaleWindow{duration: duration, lastWrite: map[string]time.Time{}, inFlight: map[string]struct{}{}}
}

// reservation is the outcome of asking to write to a target.
type reservation struct {
	// wait is how long the write must wait; zero means the caller holds the reservation and
	// must end it with complete.
	wait time.Duration
	// busy is true when another worker holds the target's reservation: its write is under way,
	// and the caller should look again once it completes.
	busy bool
}

// reserve asks to write to target at now. persisted is the last write time recorded in status,
// which survives controller restarts; the later of it and the window's own record counts.
func (w *rescaleWindow) reserve(target string, persisted, now time.Time) reservation {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.inFlight[target]; ok {
		return reservation{busy: true}
	}
	last := w.lastWrite[target]
	if persisted.After(last) {
		last = persisted
	}
	if !last.IsZero() {
		if remaining := last.Add(w.duration).Sub(now); remaining > 0 {
			return reservation{wait: remaining}
		}
	}
	w.inFlight[target] = struct{}{}
	return reservation{}
}

// complete ends a reservation. wroteAt is when the write was answered, or zero when nothing
// was written (the target was already up, or the write failed); only a write starts a window.
func (w *rescaleWindow) complete(target string, wroteAt time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.inFlight, target)
	if wroteAt.IsZero() {
		return
	}
	w.prune(wroteAt)
	w.lastWrite[target] = wroteAt
	w.written = append(w.written, windowWrite{target: target, at: wroteAt})
}

// prune drops the targets whose last write is a window older than now. A listed write that a
// later one to its target replaced is dropped from the list only.
func (w *rescaleWindow) prune(now time.Time) {
	for w.head < len(w.written) {
		oldest := w.written[w.head]
		w.pruneVisits++
		if now.Sub(oldest.at) < w.duration {
			break
		}
		if last, ok := w.lastWrite[oldest.target]; ok && last.Equal(oldest.at) {
			delete(w.lastWrite, oldest.target)
		}
		w.written[w.head] = windowWrite{}
		w.head++
	}
	// Reuse the list's front once most of it is spent, so that it holds one window's writes.
	if w.head > 0 && w.head >= len(w.written)/2 {
		w.written = append(w.written[:0], w.written[w.head:]...)
		w.head = 0
	}
}
