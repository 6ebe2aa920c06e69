package controller

import (
	"slices"
	"testing"

	"k8s.io/client-go/tools/cache"
)

func TestFirstScalesReleaseOnLastAttempt(t *testing.T) {
	f := newFirstScales()
	a, b, ready := cache.ObjectName{Name: "a"}, cache.ObjectName{Name: "b"}, cache.ObjectName{Name: "ready"}
	if f.hold(ready) {
		t.Fatal("held with no scale attempt pending")
	}
	f.expect(a)
	f.expect(b)
	if !f.hold(ready) {
		t.Fatal("not held while two scale attempts are pending")
	}
	if got := f.attempted(a); got != nil {
		t.Fatalf("released %v while b's attempt is pending", got)
	}
	if got := f.attempted(ready); got != nil {
		t.Fatalf("a request that was not pending released %v", got)
	}
	if got := f.attempted(b); !slices.Equal(got, []cache.ObjectName{ready}) {
		t.Fatalf("the last attempt released %v, want [ready]", got)
	}
	if got := f.attempted(b); got != nil {
		t.Fatalf("released %v twice", got)
	}
	if pending, held := f.counts(); pending != 0 || held != 0 {
		t.Fatalf("%d pending and %d held left, want none", pending, held)
	}
}

// A request whose own attempt is the only one pending is not held by it: its attempt, about to
// be recorded, would otherwise have to release itself.
func TestFirstScalesOwnAttemptDoesNotHold(t *testing.T) {
	f := newFirstScales()
	a := cache.ObjectName{Name: "a"}
	f.expect(a)
	if f.hold(a) {
		t.Fatal("held by its own pending attempt")
	}
	if got := f.attempted(a); got != nil {
		t.Fatalf("released %v, want nothing", got)
	}
}
