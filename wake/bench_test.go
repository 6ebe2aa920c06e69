package wake_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/clock"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/wake"
)

// suppressedClient returns a running client for which Wake(web) is suppressed (written less than
// the window ago), with 1,000 other targets in its cache.
func suppressedClient(b *testing.B) *wake.Client {
	others := make([]runtime.Object, 1000)
	for i := range others {
		others[i] = existing(1, t0, func(sr *v1alpha1.ScaleRequest) {
			sr.Name = fmt.Sprintf("svc-%d", i)
			sr.Spec.ScaleTargetRef.Name = sr.Name
		})
	}
	f := newFakeAPI(others...) // listed, not watched: the fake watcher holds only 100 events
	// The real clock, as in a resolver (the fake clock takes a lock in Now).
	c := startClient(b, f, wake.Options{Clock: clock.RealClock{}})
	ctx := context.Background()
	if a, err := c.Wake(ctx, web); err != nil || a != wake.ActionCreated {
		b.Fatalf("Wake = %v, %v", a, err)
	}
	eventually(b, "cache", func() bool { return c.Status(web).Exists })
	return c
}

// BenchmarkWakeSuppressed measures the resolver's hot path: Wake for a target signalled within
// the window. It must not allocate.
func BenchmarkWakeSuppressed(b *testing.B) {
	c := suppressedClient(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if a, err := c.Wake(ctx, web); a != wake.ActionRecentlySignalled || err != nil {
			b.Fatalf("Wake = %v, %v", a, err)
		}
	}
}

// BenchmarkWakeSuppressedParallel is the same path from GOMAXPROCS goroutines at once.
func BenchmarkWakeSuppressedParallel(b *testing.B) {
	c := suppressedClient(b)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if a, err := c.Wake(ctx, web); a != wake.ActionRecentlySignalled || err != nil {
				b.Errorf("Wake = %v, %v", a, err)
				return
			}
		}
	})
}

func TestWakeSuppressedDoesNotAllocate(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		objs []runtime.Object
		want wake.Action
	}{
		{"recently signalled by this client", nil, wake.ActionRecentlySignalled},
		{"ready and fresh", []runtime.Object{existing(2, t0.Add(-time.Second), readyStatus)}, wake.ActionAlreadyReady},
		{"active", []runtime.Object{existing(2, t0.Add(-time.Hour), nil)}, wake.ActionAlreadyActive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(tc.objs...)
			c := startClient(t, f, wake.Options{})
			if tc.objs == nil {
				if _, err := c.Wake(ctx, web); err != nil {
					t.Fatal(err)
				}
			}
			if a, err := c.Wake(ctx, web); a != tc.want || err != nil {
				t.Fatalf("Wake = %v, %v; want %v", a, err, tc.want)
			}
			if n := testing.AllocsPerRun(1000, func() { _, _ = c.Wake(ctx, web) }); n != 0 {
				t.Errorf("suppressed Wake allocates %v times per call", n)
			}
		})
	}
}

// BenchmarkDemandReady measures the gate's fast path on the wake client: Demand for a Ready
// target (a status from the cache, and the demand mark). It must not allocate.
func BenchmarkDemandReady(b *testing.B) {
	c := suppressedClient(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c.Demand(web)
	}
}
