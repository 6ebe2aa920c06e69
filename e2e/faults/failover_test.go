package faults

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/zerowake/zerowake/e2e/framework"
)

const (
	failoverBurst     = 300
	leaseDuration     = 6 * time.Second
	lostLeaseDuration = 10 * time.Second
)

var failoverArgs = []string{
	"--kube-api-qps=500", "--kube-api-burst=1000",
	"--rescale-duration=5s", "--ready-timeout=5m",
	"--leader-election-lease-duration=" + leaseDuration.String(),
	"--leader-election-renew-deadline=4s",
	"--leader-election-retry-period=500ms",
}

// TestLeaderFailover: three replicas in turn, each with its own ServiceAccount, so that the
// audit log tells their requests apart. The leader A is SIGKILLed mid-burst: B takes over once
// A's lease has expired and finishes A's pending work. Then B is SIGTERMed mid-burst: it
// drains, releases the lease, and C takes over at once and finishes. The audit log shows that
// no two of them ever wrote at the same time.
func TestLeaderFailover(t *testing.T) {
	f := newFixture(t)
	const lease = "faults-failover"
	idA, idB, idC := newIdentity(t, "failover-a"), newIdentity(t, "failover-b"), newIdentity(t, "failover-c")
	ns1, ns2 := newNamespace(t), newNamespace(t)
	f.createTargets(ns1, failoverBurst)
	f.createTargets(ns2, failoverBurst)

	a := f.start("failover-a", idA, lease, failoverArgs...)
	holderA, _ := f.waitForLeader(lease, 30*time.Second)
	f.checkHolder(a, holderA)
	b := f.start("failover-b", idB, lease, failoverArgs...)

	// SIGKILL: the lease stays held until it expires.
	w := startWakes(testContext(t, 5*time.Minute), ns1, failoverBurst)
	f.waitFor(2*time.Minute, 10*time.Millisecond, func() string { return "a third of the first burst to be scaled" },
		func(context.Context) bool { return f.scaledFromZero(a) >= failoverBurst/3 })
	a.Kill()
	killedAt := time.Now()
	holderB, acquiredB := f.waitForLeader(lease, 3*leaseDuration+10*time.Second, holderA)
	f.checkHolder(b, holderB)
	t.Logf("SIGKILL: B took over %s after A was killed (lease duration %s)", acquiredB.Sub(killedAt).Round(time.Millisecond), leaseDuration)
	f.waitWakesCreated(w, failoverBurst)
	f.waitAllReady(ns1, failoverBurst, 3*time.Minute)
	t.Logf("B finished A's burst %s after the kill", time.Since(killedAt).Round(time.Millisecond))

	// SIGTERM: the leader drains and releases the lease; the standby need not wait for expiry.
	c := f.start("failover-c", idC, lease, failoverArgs...)
	base := f.scaledFromZero(b)
	w = startWakes(testContext(t, 5*time.Minute), ns2, failoverBurst)
	f.waitFor(2*time.Minute, 10*time.Millisecond, func() string { return "a third of the second burst to be scaled" },
		func(context.Context) bool { return f.scaledFromZero(b)-base >= failoverBurst/3 })
	termAt := time.Now()
	exited := make(chan bool, 1)
	go func() { exited <- b.Stop(time.Minute) }()
	holderC, acquiredC := f.waitForLeader(lease, 3*leaseDuration+10*time.Second, holderB)
	f.checkHolder(c, holderC)
	graceful := <-exited
	t.Logf("SIGTERM: C took over %s after B was told to stop", acquiredC.Sub(termAt).Round(time.Millisecond))
	if log := b.Tail(1 << 30); !graceful || !strings.Contains(log, "ScaleRequest controller stopped") || strings.Contains(log, "Controller failed") {
		f.fatalf("B did not drain and exit cleanly on SIGTERM (exited by itself: %v)", graceful)
	}
	f.waitWakesCreated(w, failoverBurst)
	f.waitAllReady(ns2, failoverBurst, 3*time.Minute)
	t.Logf("C finished B's burst %s after B was told to stop", time.Since(termAt).Round(time.Millisecond))

	f.checkOneWriterAtATime(lease, []identity{idA, idB, idC}, []string{holderA, holderB, holderC})
}

// checkHolder checks that the lease holder is the given controller, by the identity it logs
// once it has acquired the lease.
func (f *fixture) checkHolder(c *framework.Controller, holder string) {
	f.t.Helper()
	f.waitFor(10*time.Second, 20*time.Millisecond, func() string { return fmt.Sprintf("controller %s to log that it leads as %q", c.Name, holder) },
		func(context.Context) bool {
			return strings.Contains(c.Tail(1<<30), `"msg":"Became leader","identity":"`+holder+`"`)
		})
}

// checkOneWriterAtATime reads every write the identities made from the audit log and checks
// that they took turns: all of one's writes completed before the next one's first write was
// received, and each wrote only while it held the lease.
func (f *fixture) checkOneWriterAtATime(lease string, ids []identity, holders []string) {
	f.t.Helper()
	type term struct {
		writes                      span
		acquired, renewed, released *auditEvent
		// unchangedSince is the first of the latest run of renewals that a candidate cannot
		// tell apart: client-go compares lease records with their renew time cut to the
		// second, and counts the lease duration from when it saw the record change.
		unchangedSince *auditEvent
	}
	var terms []term
	for i, id := range ids {
		all := auditLog(f.t, byUser(id.user))
		var writes, events []auditEvent
		var tm term
		var renewSecond int64
		for j, e := range all {
			if e.workWrite() {
				writes = append(writes, e)
				continue
			}
			if e.resource() == "events" && e.isWrite() {
				events = append(events, e)
				continue
			}
			if holder, ok := leaseHolder(e); ok && e.ObjectRef.Name == lease && e.succeeded() {
				if holder == holders[i] {
					if second := leaseRenewSecond(e); tm.unchangedSince == nil || second != renewSecond {
						tm.unchangedSince, renewSecond = &all[j], second
					}
				}
				switch {
				case holder == holders[i] && tm.acquired == nil:
					tm.acquired, tm.renewed = &all[j], &all[j]
				case holder == holders[i]:
					tm.renewed = &all[j]
				case holder == "":
					tm.released = &all[j]
				}
			}
		}
		tm.writes = spanOf(writes)
		terms = append(terms, tm)
		f.t.Logf("audit: %s: %v; lease acquired %s, last renewed %s, released %s", id.name, tm.writes,
			stamp(tm.acquired, true), stamp(tm.renewed, false), stamp(tm.released, false))
		if tm.writes.n == 0 {
			f.fatalf("%s made no writes", id.name)
		}
		if tm.acquired == nil || writes[0].Received.Before(&tm.acquired.Completed) {
			f.fatalf("%s wrote before it held the lease (acquired: %v); first write: %v", id.name, tm.acquired, writes[0])
		}
		if tm.released != nil && tm.released.Received.Time.Before(tm.writes.last) {
			f.fatalf("%s wrote after it released the lease at %v:%s", id.name, tm.released, summarize(after(writes, tm.released.Received.Time), 10))
		}
		if tm.released != nil {
			// Events are posted asynchronously; report any that trailed the release.
			if late := after(events, tm.released.Received.Time); len(late) > 0 {
				f.t.Logf("audit: %s posted %d events after releasing the lease:%s", id.name, len(late), summarize(late, 3))
			}
		}
	}
	for i := 1; i < len(terms); i++ {
		prev, next := terms[i-1], terms[i]
		if !prev.writes.last.Before(next.writes.first) {
			f.fatalf("%s and %s wrote at the same time: %v overlaps %v", ids[i-1].name, ids[i].name, prev.writes, next.writes)
		}
		f.t.Logf("audit: %s's last write completed %s before %s's first", ids[i-1].name,
			next.writes.first.Sub(prev.writes.last).Round(time.Millisecond), ids[i].name)
		if prev.released != nil {
			f.t.Logf("audit: %s acquired the lease %s after %s released it", ids[i].name,
				next.acquired.Received.Sub(prev.released.Completed.Time).Round(time.Millisecond), ids[i-1].name)
			continue
		}
		// Not released: the successor may take it only once it has expired, counted from the
		// last renewal it could see as a change.
		gap := next.acquired.Received.Sub(prev.renewed.Completed.Time)
		// A record cannot be seen before its write was received, hence no slack here.
		seen := next.acquired.Received.Sub(prev.unchangedSince.Received.Time)
		f.t.Logf("audit: %s acquired the lease %s after %s last renewed it, %s after the last renewal that changed the record's second (lease duration %s)",
			ids[i].name, gap.Round(time.Millisecond), ids[i-1].name, seen.Round(time.Millisecond), leaseDuration)
		if seen < leaseDuration {
			f.fatalf("%s took the lease %s after %s's last visible renewal, before it expired", ids[i].name, seen, ids[i-1].name)
		}
	}
}

func stamp(e *auditEvent, received bool) string {
	switch {
	case e == nil:
		return "never"
	case received:
		return e.Received.Format("15:04:05.000000")
	default:
		return e.Completed.Format("15:04:05.000000")
	}
}

// after returns the events received after t.
func after(events []auditEvent, t time.Time) []auditEvent {
	var out []auditEvent
	for _, e := range events {
		if e.Received.After(t) {
			out = append(out, e)
		}
	}
	return out
}

// TestLostLeaseStopsWork: a leader that can no longer renew its lease (here: another holder
// takes it over, as a partitioned replica would see it) stops writing before the lease it last
// renewed could have expired, and exits so that it can be restarted as a candidate.
func TestLostLeaseStopsWork(t *testing.T) {
	f := newFixture(t)
	const lease = "faults-lost-lease"
	id := newIdentity(t, "lost-lease")
	ns := newNamespace(t)
	f.createTargets(ns, failoverBurst)
	// A leader stops at the latest a renew deadline (and a retry) after its last renewal; the
	// lease must outlast that by more than a busy machine's delays.
	c := f.start("lost-lease", id, lease, "--kube-api-qps=500", "--kube-api-burst=1000", "--rescale-duration=5s",
		"--leader-election-lease-duration="+lostLeaseDuration.String(), "--leader-election-renew-deadline=4s", "--leader-election-retry-period=500ms")
	holder, _ := f.waitForLeader(lease, 30*time.Second)
	f.checkHolder(c, holder)

	w := startWakes(testContext(t, 5*time.Minute), ns, failoverBurst)
	f.waitFor(2*time.Minute, 10*time.Millisecond, func() string { return "a third of the burst to be scaled" },
		func(context.Context) bool { return f.scaledFromZero(c) >= failoverBurst/3 })
	ctx := testContext(t, time.Minute)
	// The leader renews every 500ms, so a read-modify-write of its lease can lose the race to a
	// renewal; retrying on the conflict is what a real competing candidate does too.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		l, err := kube.CoordinationV1().Leases(installNamespace).Get(ctx, lease, metav1.GetOptions{})
		if err != nil {
			return err
		}
		l.Spec.HolderIdentity = ptr.To("thief")
		l.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
		l.Spec.LeaseDurationSeconds = ptr.To[int32](3600)
		_, err = kube.CoordinationV1().Leases(installNamespace).Update(ctx, l, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	stolenAt := time.Now()
	select {
	case <-c.Done():
		t.Logf("the controller exited %s after its lease was taken", time.Since(stolenAt).Round(time.Millisecond))
	case <-time.After(time.Minute):
		f.fatalf("the controller did not exit within a minute of losing its lease")
	}
	if log := c.Tail(1 << 30); !strings.Contains(log, "Lost the leader election lease") {
		f.fatalf("the controller did not say it lost its lease")
	}

	// Safety: every write was received before the lease this controller last renewed expired.
	var lastRenew *auditEvent
	var writes []auditEvent
	events := auditLog(t, byUser(id.user))
	for i, e := range events {
		if holder, ok := leaseHolder(e); ok && holder != "" && e.succeeded() {
			lastRenew = &events[i]
		}
		if e.workWrite() {
			writes = append(writes, e)
		}
	}
	// The controller controls when it sends, not how long the apiserver takes to answer: the
	// check is on when each write was received.
	expiry := lastRenew.Completed.Add(lostLeaseDuration)
	var lastSent time.Time
	for _, e := range writes {
		if e.Received.After(lastSent) {
			lastSent = e.Received.Time
		}
	}
	t.Logf("audit: last renewal %s (the lease was taken at %s); last write received %s after it (renew deadline 4s), %s before it expired",
		stamp(lastRenew, false), stolenAt.Format("15:04:05.000000"), lastSent.Sub(lastRenew.Completed.Time).Round(time.Millisecond),
		expiry.Sub(lastSent).Round(time.Millisecond))
	if late := after(writes, expiry); len(late) > 0 {
		f.fatalf("%d writes after the lease last renewed at %s expired:%s", len(late), stamp(lastRenew, false), summarize(late, 10))
	}
	w.halt()
}
