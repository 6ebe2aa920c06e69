package controller

import (
	"fmt"
	"testing"
	"time"
)

// burstTargets are the targets of a burst of wakes, one write each within one window.
func burstTargets(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("shop/apps/Deployment/t%05d", i)
	}
	return ids
}

// TestWindowPruningIsLinearInABurst: ending n reservations within one window looks at O(n)
// entries to drop the expired ones, not at every remembered target on each completion, which
// made a burst of 10,000 quadratic under the lock all workers share.
func TestWindowPruningIsLinearInABurst(t *testing.T) {
	w := newRescaleWindow(window)
	ids := burstTargets(10000)
	for i, id := range ids {
		at := t0.Add(time.Duration(i) * time.Millisecond)
		if res := w.reserve(id, time.Time{}, at); res.wait != 0 || res.busy {
			t.Fatalf("%s: reservation %+v, want it granted", id, res)
		}
		w.complete(id, at)
	}
	if max := 2 * len(ids); w.pruneVisits > max {
		t.Fatalf("%d entries looked at to prune over %d completions, want at most %d", w.pruneVisits, len(ids), max)
	}

	// Entries still go once their window has passed: a write one window after the burst's
	// last leaves only itself, and the targets may be written again.
	later := t0.Add(window + time.Duration(len(ids))*time.Millisecond)
	if res := w.reserve("shop/apps/Deployment/late", time.Time{}, later); res.wait != 0 || res.busy {
		t.Fatalf("late reservation %+v", res)
	}
	w.complete("shop/apps/Deployment/late", later)
	if n := len(w.lastWrite); n != 1 {
		t.Fatalf("%d targets remembered one window after the burst, want 1", n)
	}
	if res := w.reserve(ids[0], time.Time{}, later); res.wait != 0 || res.busy {
		t.Fatalf("a target written a window ago: reservation %+v, want it granted", res)
	}
}

// TestWindowKeepsARewrittenTarget: a target written again keeps its newer write when its older
// one expires.
func TestWindowKeepsARewrittenTarget(t *testing.T) {
	w := newRescaleWindow(window)
	w.reserve("a", time.Time{}, t0)
	w.complete("a", t0)
	w.reserve("a", time.Time{}, t0.Add(window))
	w.complete("a", t0.Add(window))
	w.reserve("b", time.Time{}, t0.Add(window+time.Second))
	w.complete("b", t0.Add(window+time.Second))
	if res := w.reserve("a", time.Time{}, t0.Add(window+2*time.Second)); res.wait != window-2*time.Second {
		t.Fatalf("a rewritten at +%s: reservation %+v at +%s, want a wait of %s", window, res, window+2*time.Second, window-2*time.Second)
	}
}

// BenchmarkWindowBurst10k ends 10,000 reservations of distinct targets within one window, as
// the workers do in a burst of 10,000 wakes.
func BenchmarkWindowBurst10k(b *testing.B) {
	ids := burstTargets(10000)
	for b.Loop() {
		w := newRescaleWindow(window)
		for i, id := range ids {
			at := t0.Add(time.Duration(i) * time.Millisecond)
			w.reserve(id, time.Time{}, at)
			w.complete(id, at)
		}
	}
}
