package faults

import (
	"context"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/e2e/framework"
)

// burstSize is the number of distinct idle targets woken at once by the crash and apiserver
// restart tests: enough that the fault lands while hundreds of wakes are queued, held or half
// written (a third are scaled when it strikes). The thousand-wake burst's speed is measured by
// make bench, not here.
const burstSize = 400

// burstArgs run the controller as installed (leader election on, default workers), with
// client-side rate limits raised so that a burst of hundreds of wakes is limited by the control
// plane rather than by the controller's own throttle, and a short lease so that a restarted
// controller need not wait 15s for the lease its killed predecessor held.
var burstArgs = []string{
	"--kube-api-qps=500", "--kube-api-burst=1000",
	"--rescale-duration=5s", "--ready-timeout=5m",
	"--leader-election-lease-duration=8s", "--leader-election-renew-deadline=6s", "--leader-election-retry-period=1s",
}

// TestCrashMidBurst: a burst of wakes for distinct idle targets, the controller SIGKILLed
// midway and started again. No wake is lost: every request reaches Ready for its signal, every
// target reaches exactly its minimum, and each target's /scale is written exactly once over
// both processes' lives.
func TestCrashMidBurst(t *testing.T) {
	f := newFixture(t)
	ns := newNamespace(t)
	id := newIdentity(t, "crash")
	const lease = "faults-crash"
	rec := recordReplicas(t, ns)
	f.createTargets(ns, burstSize)

	first := f.start("crash-1", id, lease, burstArgs...)
	holder, _ := f.waitForLeader(lease, 30*time.Second)
	begin := time.Now()
	w := startWakes(testContext(t, 5*time.Minute), ns, burstSize)

	// Midway: once a third of the targets have been scaled.
	f.waitFor(2*time.Minute, 10*time.Millisecond, func() string { return "a third of the burst to be scaled" },
		func(context.Context) bool { return f.scaledFromZero(first) >= burstSize/3 })
	scaledByFirst := f.scaledFromZero(first)
	first.Kill()
	killedAt := time.Now()
	created := w.created.Load()
	before, err := takeCensus(testContext(t, time.Minute), ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGKILL after %s: the controller had scaled %.0f targets; %d of %d wakes created; on the server: %v",
		killedAt.Sub(begin).Round(time.Millisecond), scaledByFirst, created, burstSize, before)

	second := f.start("crash-2", id, lease, burstArgs...)
	_, acquired := f.waitForLeader(lease, time.Minute, holder)
	t.Logf("restarted controller leads %s after the kill (the killed one's lease had to expire)", acquired.Sub(killedAt).Round(time.Millisecond))
	f.waitWakesCreated(w, burstSize)
	final := f.waitAllReady(ns, burstSize, 6*time.Minute)
	t.Logf("all %d requests Ready %s after the burst began, %s after the kill", burstSize,
		time.Since(begin).Round(time.Millisecond), time.Since(killedAt).Round(time.Millisecond))
	t.Logf("final: %v; the restarted controller scaled %.0f targets from zero", final, f.scaledFromZero(second))

	f.checkTargetsAtMinimum(ns, burstSize, rec)
	f.checkScaledOnce(ns, burstSize, id.user)
	f.checkAllScaledConditions(ns)
}

// checkScaledOnce checks from the audit log that user's writes to each target's /scale took
// effect exactly once: the wake was neither lost nor applied twice. A write cut off by a kill
// or an apiserver restart is answered with a 5xx (or not at all) although it may have been
// committed; a target whose only write is such a one counts as written once, which the final
// replica counts (checkTargetsAtMinimum) then confirm.
func (f *fixture) checkScaledOnce(ns string, n int, user string) {
	f.t.Helper()
	ok, cut := map[string]int{}, map[string]int{}
	refused := 0
	for _, e := range auditLog(f.t, byUser(user)) {
		if e.resource() != "deployments/scale" || e.Verb != "patch" || e.ObjectRef.Namespace != ns {
			continue
		}
		switch {
		case e.succeeded():
			ok[e.ObjectRef.Name]++
		case e.code() == 0 || e.code() >= 500:
			cut[e.ObjectRef.Name]++
		default:
			refused++
		}
	}
	bad, uncertain := 0, 0
	for i := range n {
		name := targetName(i)
		if ok[name] == 0 && cut[name] > 0 {
			uncertain++
		}
		// A 200 means the patch's test found the target at zero: an earlier cut-off write
		// to it had not been committed. So one 200, or none and a cut-off write, is once.
		if ok[name] > 1 || ok[name]+cut[name] == 0 {
			if bad++; bad <= 10 {
				f.t.Errorf("target %s: /scale written %d times, and %d writes cut off; want exactly one that took effect", name, ok[name], cut[name])
			}
		}
	}
	if bad > 0 {
		f.t.Fatalf("%d of %d targets not written exactly once", bad, n)
	}
	f.t.Logf("audit: each of %d targets' /scale written once (%d of them by a write cut off mid-way); %d patches refused (the target was already up)",
		n, uncertain, refused)
}

// checkAllScaledConditions checks each request's Scaled condition says the target was raised,
// by this signal or (after a crash between scale and status write) found already raised.
func (f *fixture) checkAllScaledConditions(ns string) {
	f.t.Helper()
	list, err := client.ZerowakeV1alpha1().ScaleRequests(ns).List(testContext(f.t, time.Minute), metav1.ListOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	reasons := map[string]int{}
	for i := range list.Items {
		sr := &list.Items[i]
		c := meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionScaled)
		if c == nil || c.Status != metav1.ConditionTrue || (c.Reason != v1alpha1.ReasonScaledFromZero && c.Reason != v1alpha1.ReasonAlreadyScaled) {
			f.t.Errorf("%s: %s", sr.Name, framework.DescribeStatus(sr))
			continue
		}
		reasons[c.Reason]++
	}
	f.t.Logf("Scaled reasons: %v", reasons)
}

// TestCrashDuringHeldStatusWrite: a scale write whose status write is held (scale first: another
// target is waking) is not lost when the controller is SIGKILLed before that write. The
// successor finds the target up and recognises, from the target's own record of who last wrote
// its /scale, that the controller scaled it from zero for this signal: it records the scale
// (ScaledFromZero from 0) and, once the target is ready, a cold start.
func TestCrashDuringHeldStatusWrite(t *testing.T) {
	f := newFixture(t)
	ns := newNamespace(t)
	id := newIdentity(t, "held")
	const lease = "faults-held"
	ctx := testContext(t, 4*time.Minute)
	for _, name := range []string{"slow", "web"} {
		// Neither becomes ready while the first controller runs, so neither's wake ends.
		if _, err := kube.AppsV1().Deployments(ns).Create(ctx, unschedulable(deployment(ns, name, 0)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// A long window holds web's status write for as long as the test needs to kill the controller.
	args := append(slices.Clone(burstArgs), "--rescale-duration=2m")
	first := f.start("held-1", id, lease, args...)
	holder, _ := f.waitForLeader(lease, 30*time.Second)

	requests := client.ZerowakeV1alpha1().ScaleRequests(ns)
	if _, err := requests.Create(ctx, scaleRequest(ns, "slow", 1), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitFor(time.Minute, 20*time.Millisecond, func() string { return "slow's request to say Scaled" }, func(ctx context.Context) bool {
		sr, err := requests.Get(ctx, "slow", metav1.GetOptions{})
		return err == nil && meta.IsStatusConditionTrue(sr.Status.Conditions, v1alpha1.ConditionScaled)
	})
	signal := time.Now()
	if _, err := requests.Create(ctx, scaleRequest(ns, "web", 1), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitFor(time.Minute, 5*time.Millisecond, func() string { return "web to be scaled" }, func(ctx context.Context) bool {
		d, err := kube.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		return err == nil && ptr.Deref(d.Spec.Replicas, 0) == 1
	})
	first.Kill()
	sr, err := requests.Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionScaled) != nil {
		f.fatalf("web's status was written before the kill (%s): the write was not held, so this test proves nothing", framework.DescribeStatus(sr))
	}
	t.Logf("SIGKILL with web scaled and its status write held: %s", framework.DescribeStatus(sr))

	second := f.start("held-2", id, lease, args...)
	f.waitForLeader(lease, time.Minute, holder)
	// Let web's pods schedule, so that it becomes ready under the successor.
	patch := []byte(`{"spec":{"template":{"spec":{"nodeSelector":null}}}}`)
	if _, err := kube.AppsV1().Deployments(ns).Patch(ctx, "web", types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	var last *v1alpha1.ScaleRequest
	f.waitFor(2*time.Minute, 50*time.Millisecond, func() string { return "web's request to be Ready: " + framework.DescribeStatus(last) }, func(ctx context.Context) bool {
		got, err := requests.Get(ctx, "web", metav1.GetOptions{})
		if err == nil {
			last = got
		}
		return err == nil && got.Status.Phase == v1alpha1.PhaseReady && got.Status.ObservedGeneration == got.Generation
	})
	scaled := meta.FindStatusCondition(last.Status.Conditions, v1alpha1.ConditionScaled)
	if scaled == nil || scaled.Reason != v1alpha1.ReasonScaledFromZero {
		f.fatalf("the successor recorded %s, want Scaled=True ScaledFromZero (the killed controller's write)", framework.DescribeStatus(last))
	}
	// The API server keeps no time for writes through /scale (v1.37): a lastScaleTime, if any,
	// is the killed controller's write, never an earlier one.
	if lst := last.Status.LastScaleTime; lst != nil && lst.Before(&metav1.Time{Time: signal.Add(-time.Second)}) {
		f.fatalf("lastScaleTime %v, before the signal at %s", lst, signal.Format(time.RFC3339Nano))
	}
	if last.Status.ColdStartDuration == nil || last.Status.PreviousReplicas == nil || *last.Status.PreviousReplicas != 0 {
		f.fatalf("coldStartDuration %v, previousReplicas %v: want a cold start from zero", last.Status.ColdStartDuration, last.Status.PreviousReplicas)
	}
	t.Logf("the successor (%s) recorded: %s", second.Name, framework.DescribeStatus(last))
}
