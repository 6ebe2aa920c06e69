package node

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestSleepWakeRace: the sleepy app is woken by a request, goes to sleep when idle and is woken
// again, cycle after cycle, with a second request arriving at random around the idle moment:
// before the controller drains it, while the gates acknowledge the drain, while the scale to
// zero stops its pod, or after. Every request must be answered by the app's own pod. A request
// the gate let through while the app had no ready pod would find no endpoint in the proxy (its
// upstreams are the Service's ready endpoints) and get the proxy's error instead, which is what
// the lower-level race test's witness looks for on kwok nodes.
func TestSleepWakeRace(t *testing.T) {
	// Eight cycles of up to 10s pause and a cold start each: more than the other tests' 3 minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	requireIdle(t, ctx, sleepyApp)

	// Sleeps and wakes, as the Deployment's replicas go to 0 and back.
	watch, err := cluster.Client().AppsV1().Deployments(appNamespace).Watch(ctx,
		metav1.ListOptions{FieldSelector: "metadata.name=" + sleepyApp.Name})
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Stop()
	var sleeps, wakes atomic.Int64
	go func() {
		var last int32
		for ev := range watch.ResultChan() {
			d, ok := ev.Object.(*appsv1.Deployment)
			if !ok || d.Spec.Replicas == nil {
				continue
			}
			switch now := *d.Spec.Replicas; {
			case last > 0 && now == 0:
				sleeps.Add(1)
			case last == 0 && now > 0:
				wakes.Add(1)
			}
			last = *d.Spec.Replicas
		}
	}()

	client := proxy.Client(2 * routeTimeout)
	var (
		calls    atomic.Int64
		mu       sync.Mutex
		failures []string
	)
	call := func(what string) {
		calls.Add(1)
		r := get(ctx, client, sleepyApp)
		t.Logf("%s: %s", what, r)
		if !answeredByApp(r, sleepyApp) {
			mu.Lock()
			failures = append(failures, fmt.Sprintf("%s at %s: %s", what, time.Now().Format("15:04:05.000"), r))
			mu.Unlock()
		}
	}
	// The app turns idle idle-after (5s) plus the renewal lag (1.2s) after the last renewal of
	// its activity Lease, which comes up to 1s before or 1.2s after the last call: 5.2-7.4s
	// after the call. The drain and the scale take a fraction of a second more. Pauses drawn
	// from 4-6s, 6-8s, 8-10s and 10-12s in turn put the second request before, during and
	// after that; the last two always find the app asleep or going to sleep.
	const cycles = 8
	var wg sync.WaitGroup
	start := time.Now()
	for i := range cycles {
		call(fmt.Sprintf("cycle %d", i))
		time.Sleep(4*time.Second + time.Duration(i%4)*2*time.Second + rand.N(2*time.Second))
		wg.Go(func() {
			time.Sleep(rand.N(400 * time.Millisecond))
			call(fmt.Sprintf("race %d", i))
		})
	}
	wg.Wait()
	t.Logf("%d cycles in %s: %d requests, %d not answered by the app; %d sleeps, %d wakes",
		cycles, time.Since(start).Round(time.Second), calls.Load(), len(failures), sleeps.Load(), wakes.Load())
	if len(failures) > 0 {
		t.Errorf("requests not answered by the app's pod: %v\ncaddy log:\n%s", failures, tail(proxy.Log(), 20))
	}
	// A quarter of the pauses (10-12s) end seconds after the idle moment: fewer than two sleeps
	// would mean the requests no longer come around it, and the test races nothing.
	if sleeps.Load() < 2 {
		t.Errorf("only %d sleeps in %d cycles: the race did not happen", sleeps.Load(), cycles)
	}
}
