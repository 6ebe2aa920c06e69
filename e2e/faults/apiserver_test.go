package faults

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
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
	t.Logf("kube-apiserver restarted in %s, %s into the burst, after %.0f targets were scaled",
		readyAt.Sub(restartAt).Round(time.Millisecond), restartAt.Sub(begin).Round(time.Millisecond), scaledBefore)
	// What the system guarantees is that work resumes and nothing is lost, not that some
	// scale is still left to do when this process notices the apiserver is back: the
	// controller may finish the whole burst first. So the bound is the outcome below.
	f.waitWakesCreated(w, burstSize)
	final := f.waitAllReady(ns, burstSize, 6*time.Minute)
	t.Logf("status writes after the restart: %.0f", f.metric(c, "zerowake_status_writes_total", "result", "ok"))
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

// TestRequestsServedSoonAfterAPIServerReturns: requests signalled while kube-apiserver restarts
// are served within seconds of its return. A just-restarted apiserver may answer 403 for about
// a second while its authorizer warms up; such a Forbidden is re-checked after 1s, 2s, 4s…, not
// after a whole rescale window, which this controller sets to a minute so that a window-long
// wait cannot hide inside the bound.
func TestRequestsServedSoonAfterAPIServerReturns(t *testing.T) {
	f := newFixture(t)
	ns := newNamespace(t)
	id := newIdentity(t, "apiserver-return")
	const lease = "faults-apiserver-return"
	const n = 50
	const window = time.Minute
	f.createTargets(ns, n)
	c := f.start("apiserver-return", id, lease, "--rescale-duration="+window.String(),
		"--leader-election-lease-duration=40s", "--leader-election-renew-deadline=30s", "--leader-election-retry-period=2s")
	f.waitForLeader(lease, 30*time.Second)

	restarted := make(chan error, 1)
	go func() { restarted <- cluster.RestartAPIServer(testContext(t, 2*time.Minute)) }()
	// Signal while the apiserver goes away and comes back: creates are retried until accepted.
	ctx := testContext(t, 3*time.Minute)
	err := parallel(ctx, n, func(ctx context.Context, i int) error {
		for {
			_, err := client.ZerowakeV1alpha1().ScaleRequests(ns).Create(ctx, scaleRequest(ns, targetName(i), 1), metav1.CreateOptions{})
			if err == nil || apierrors.IsAlreadyExists(err) { // accepted before the answer was lost
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("creating request %d: %w", i, err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	if err != nil {
		f.fatalf("%v", err)
	}
	if err := <-restarted; err != nil {
		f.fatalf("restarting kube-apiserver: %v", err)
	}
	back := time.Now()
	f.waitFor(2*time.Minute, 20*time.Millisecond, func() string { return "every request to be scaled" }, func(ctx context.Context) bool {
		list, err := client.ZerowakeV1alpha1().ScaleRequests(ns).List(ctx, metav1.ListOptions{})
		if err != nil || len(list.Items) != n {
			return false
		}
		for _, sr := range list.Items {
			if !scaledFor(&sr) {
				return false
			}
		}
		return true
	})
	served := time.Since(back)
	t.Logf("all %d requests scaled %s after kube-apiserver was ready again; outcomes: Forbidden %.0f, ScaledFromZero %.0f",
		n, served.Round(time.Millisecond), f.metric(c, "zerowake_scale_total", "reason", "Forbidden"), f.scaledFromZero(c))
	if served >= window {
		f.fatalf("requests were served %s after the apiserver's return, a whole rescale window (%s): a failure after a restart waited out the window", served, window)
	}
}

// scaledFor reports whether Scaled is True for the request's latest signal.
func scaledFor(sr *v1alpha1.ScaleRequest) bool {
	for _, c := range sr.Status.Conditions {
		if c.Type == v1alpha1.ConditionScaled {
			return c.Status == metav1.ConditionTrue && c.ObservedGeneration == sr.Generation
		}
	}
	return false
}
