package faults

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestAPIServerRestartMidBurst: the same burst, with kube-apiserver restarted midway. The
// controller is not restarted: it reconnects by itself, keeps its lease, and finishes every
// wake, each target's /scale written exactly once.
func TestAPIServerRestartMidBurst(t *testing.T) {
	f := newFixture(t)
	ns := newNamespace(t)
	id := newIdentity(t, "apiserver")
	const lease = "faults-apiserver"
	rec := recordReplicas(t, ns)
	f.createTargets(ns, burstSize)

	// The lease must outlast the outage. A restart takes about as long as the shipped renew
	// deadline (10s) here, and a leader that cannot renew in time exits on purpose (see
	// TestLostLeaseStopsWork), so this test gives the lease room to spare.
	args := append([]string{}, burstArgs...)
	args = append(args, "--leader-election-lease-duration=40s", "--leader-election-renew-deadline=30s", "--leader-election-retry-period=2s")
	c := f.start("apiserver", id, lease, args...)
	f.waitForLeader(lease, 30*time.Second)
	begin := time.Now()
	w := startWakes(testContext(t, 5*time.Minute), ns, burstSize)

	f.waitFor(2*time.Minute, 10*time.Millisecond, func() string { return "a third of the burst to be scaled" },
		func(context.Context) bool { return f.scaledFromZero(c) >= burstSize/3 })
	restartAt := time.Now()
	scaledBefore := f.scaledFromZero(c)
	if err := cluster.RestartAPIServer(testContext(t, 2*time.Minute)); err != nil {
		f.fatalf("restarting kube-apiserver: %v", err)
	}
	readyAt := time.Now()
	// Work resumes when the controller completes a write again: a status write or a scale.
	statusWrites := func() float64 { return f.metric(c, "zerowake_status_writes_total", "result", "ok") }
	scales := func() float64 {
		return f.metric(c, "zerowake_api_requests_total", "verb", "PATCH", "resource", "deployments/scale", "code", "200")
	}
	writesAtReady, scalesAtReady := statusWrites(), scales()
	var resumedAt, scaleResumedAt time.Time
	f.waitFor(2*time.Minute, 5*time.Millisecond, func() string { return "the controller to write again after the apiserver restart" },
		func(context.Context) bool {
			now := time.Now()
			if resumedAt.IsZero() && statusWrites() > writesAtReady {
				resumedAt = now
			}
			if scaleResumedAt.IsZero() && scales() > scalesAtReady {
				scaleResumedAt = now
			}
			return !resumedAt.IsZero() && !scaleResumedAt.IsZero()
		})
	t.Logf("kube-apiserver restarted in %s, %s into the burst, after %.0f targets were scaled",
		readyAt.Sub(restartAt).Round(time.Millisecond), restartAt.Sub(begin).Round(time.Millisecond), scaledBefore)
	t.Logf("from the apiserver ready again: first status write after %s, first scale after %s",
		resumedAt.Sub(readyAt).Round(time.Millisecond), scaleResumedAt.Sub(readyAt).Round(time.Millisecond))

	f.waitWakesCreated(w, burstSize)
	final := f.waitAllReady(ns, burstSize, 6*time.Minute)
	t.Logf("all %d requests Ready %s after the burst began, %s after the apiserver was ready again; %v",
		burstSize, time.Since(begin).Round(time.Millisecond), time.Since(readyAt).Round(time.Millisecond), final)

	select {
	case <-c.Done():
		f.fatalf("the controller exited during the apiserver restart")
	default:
	}
	if log := c.Tail(1 << 30); strings.Contains(log, "Stopped leading") || strings.Count(log, "Became leader") != 1 {
		f.fatalf("the controller lost its lease during the restart")
	}
	f.logOutcomes(c, ns)
	f.checkTargetsAtMinimum(ns, burstSize, rec)
	f.checkScaledOnce(ns, burstSize, id.user)
	f.checkAllScaledConditions(ns)
}
