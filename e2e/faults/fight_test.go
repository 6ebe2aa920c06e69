package faults

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/e2e/framework"
)

const (
	rescaleDuration = 2 * time.Second
	fightFor        = 5 * rescaleDuration
)

// reverter keeps setting a Deployment back to zero replicas, as a GitOps tool reverting drift
// would, until stopped.
type reverter struct {
	reverts atomic.Int64
	stop    context.CancelFunc
	done    chan struct{}
}

func startReverter(ns, name string) *reverter {
	ctx, stop := context.WithCancel(context.Background())
	r := &reverter{stop: stop, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for ctx.Err() == nil {
			if s, err := kube.AppsV1().Deployments(ns).GetScale(ctx, name, metav1.GetOptions{}); err == nil && s.Spec.Replicas > 0 {
				s.Spec.Replicas = 0
				if _, err := kube.AppsV1().Deployments(ns).UpdateScale(ctx, name, s, metav1.UpdateOptions{}); err == nil {
					r.reverts.Add(1)
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return r
}

func (r *reverter) halt() int64 {
	r.stop()
	<-r.done
	return r.reverts.Load()
}

// conditionLog records every Scaled condition reason a ScaleRequest shows while it is polled.
type conditionLog struct {
	mu   sync.Mutex
	seen map[string]bool
	stop context.CancelFunc
	done chan struct{}
}

func watchConditions(ns, name string) *conditionLog {
	ctx, stop := context.WithCancel(context.Background())
	l := &conditionLog{seen: map[string]bool{}, stop: stop, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for ctx.Err() == nil {
			if sr, err := client.ZerowakeV1alpha1().ScaleRequests(ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
				if c := meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionScaled); c != nil {
					l.mu.Lock()
					l.seen[string(c.Status)+"/"+c.Reason] = true
					l.mu.Unlock()
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return l
}

func (l *conditionLog) halt() map[string]bool {
	l.stop()
	<-l.done
	return l.seen
}

// TestFight: something keeps setting active targets back to 0. The controller scales each back
// no more than once per rescale duration, reports the fight with a Warning event and the
// Scaled condition's reason, and stops once the request is no longer active: "web" becomes
// ready (settled), "api"'s request is deleted; the reverts that follow get no answer.
func TestFight(t *testing.T) {
	f := newFixture(t)
	ns := newTidyNamespace(t)
	id := newIdentity(t, "fight")
	ctx := testContext(t, 3*time.Minute)
	for _, name := range []string{"web", "api"} {
		// Unschedulable: the targets cannot become ready, so their requests stay active.
		if _, err := kube.AppsV1().Deployments(ns).Create(ctx, unschedulable(deployment(ns, name, 0)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	c := f.start("fight", id, "faults-fight", "--rescale-duration="+rescaleDuration.String(), "--ready-timeout=5m")
	for _, name := range []string{"web", "api"} {
		if _, err := client.ZerowakeV1alpha1().ScaleRequests(ns).Create(ctx, scaleRequest(ns, name, 1), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"web", "api"} {
		f.waitForPhase(ns, name, v1alpha1.PhaseScaling, 30*time.Second)
	}

	conditions := watchConditions(ns, "web")
	fightStart := time.Now()
	web, api := startReverter(ns, "web"), startReverter(ns, "api")
	time.Sleep(fightFor)
	fightEnd := time.Now()

	// web's request stops being active by becoming Ready: the reverts stop for a moment and
	// the target becomes schedulable.
	webReverts := web.halt()
	patch := []byte(`[{"op":"remove","path":"/spec/template/spec/nodeSelector"}]`)
	if _, err := kube.AppsV1().Deployments(ns).Patch(ctx, "web", types.JSONPatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	// api's request stops being active by being deleted, while its target is still reverted.
	if err := client.ZerowakeV1alpha1().ScaleRequests(ns).Delete(ctx, "api", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deletedAt := time.Now()
	sr := f.waitForPhase(ns, "web", v1alpha1.PhaseReady, 30*time.Second)
	readyAt := time.Now()
	seen := conditions.halt()

	// Both go on being reverted after their requests ended.
	web = startReverter(ns, "web")
	time.Sleep(3 * rescaleDuration)
	afterReverts := web.halt()
	apiReverts := api.halt()
	quietEnd := time.Now()

	scales, statusWrites := map[string][]auditEvent{}, map[string]int{}
	for _, e := range auditLog(t, byUser(id.user)) {
		if e.ObjectRef == nil || e.ObjectRef.Namespace != ns {
			continue
		}
		if e.resource() == "deployments/scale" && e.Verb == "patch" && e.succeeded() {
			scales[e.ObjectRef.Name] = append(scales[e.ObjectRef.Name], e)
		}
		if e.resource() == "scalerequests/status" && e.Received.After(fightStart) && e.Received.Time.Before(fightEnd) {
			statusWrites[e.ObjectRef.Name]++
		}
	}
	for _, name := range []string{"web", "api"} {
		var during []time.Time
		for _, e := range scales[name] {
			if e.Received.After(fightStart) && e.Received.Time.Before(fightEnd) {
				during = append(during, e.Received.Time)
			}
		}
		t.Logf("%s: %d rescales in %s of fighting (rescale duration %s), %d status writes", name, len(during), fightFor, rescaleDuration, statusWrites[name])
		if len(during) < 2 {
			f.fatalf("%s: the controller did not fight back: %d rescales in %s", name, len(during), fightFor)
		}
		if most := int(fightFor/rescaleDuration) + 1; len(during) > most {
			f.fatalf("%s: %d rescales in %s, more than one per %s", name, len(during), fightFor, rescaleDuration)
		}
		// Spacing, less what the request's way to the apiserver may take out of it.
		const slack = 250 * time.Millisecond
		for i := 1; i < len(during); i++ {
			if gap := during[i].Sub(during[i-1]); gap < rescaleDuration-slack {
				f.fatalf("%s: two rescales %s apart, less than the rescale duration %s", name, gap, rescaleDuration)
			}
		}
	}
	t.Logf("reverts: web %d while fighting, %d after Ready; api %d in all", webReverts, afterReverts, apiReverts)

	// Stopped once not active: nothing written to web after its request was Ready, nor to api
	// later than one window after its request was deleted (a scale already under way may land).
	for _, tc := range []struct {
		name  string
		since time.Time
	}{{"web", readyAt}, {"api", deletedAt.Add(rescaleDuration)}} {
		if late := after(scales[tc.name], tc.since); len(late) > 0 {
			f.fatalf("%s rescaled after its request stopped being active:%s", tc.name, summarize(late, 10))
		}
	}
	t.Logf("no rescale of web in the %s after it was Ready, nor of api after its request was deleted",
		quietEnd.Sub(readyAt).Round(time.Millisecond))

	// Reported: a Warning event and the Scaled condition's reason.
	if !seen["False/"+v1alpha1.ReasonScaleFight] && !seen["True/"+v1alpha1.ReasonScaleFight] {
		f.fatalf("web's Scaled condition never said %s; seen %v", v1alpha1.ReasonScaleFight, seen)
	}
	if cond := meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionScaled); cond == nil || cond.Reason != v1alpha1.ReasonScaleFight {
		f.fatalf("web's final status does not tell of the fight: %s", framework.DescribeStatus(sr))
	}
	warnings, err := events(ctx, ns, "web", corev1.EventTypeWarning, v1alpha1.ReasonScaleFight)
	if err != nil || len(warnings) == 0 {
		f.fatalf("no Warning %s event for web: %v", v1alpha1.ReasonScaleFight, err)
	}
	t.Logf("web's Scaled condition showed %v; Warning %s: %q (count %d)", seen, v1alpha1.ReasonScaleFight, warnings[0].Message, warnings[0].Count)
	f.waitFor(30*time.Second, 100*time.Millisecond, func() string { return "no active requests" },
		func(context.Context) bool { return f.metric(c, "zerowake_active_requests") == 0 })
}

// waitForPhase waits until a ScaleRequest's latest signal is in phase, and returns it.
func (f *fixture) waitForPhase(ns, name string, phase v1alpha1.ScaleRequestPhase, timeout time.Duration) *v1alpha1.ScaleRequest {
	f.t.Helper()
	var last *v1alpha1.ScaleRequest
	f.waitFor(timeout, 20*time.Millisecond, func() string {
		return "ScaleRequest " + ns + "/" + name + " to be " + string(phase) + "; last: " + framework.DescribeStatus(last)
	}, func(ctx context.Context) bool {
		sr, err := client.ZerowakeV1alpha1().ScaleRequests(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		last = sr
		return sr.Status.ObservedGeneration == sr.Generation && sr.Status.Phase == phase
	})
	return last
}

// waitForScaled waits until a ScaleRequest's Scaled condition for its latest signal has the
// given status and reason.
func (f *fixture) waitForScaled(ns, name string, status metav1.ConditionStatus, reason string, timeout time.Duration) *v1alpha1.ScaleRequest {
	f.t.Helper()
	var last *v1alpha1.ScaleRequest
	f.waitFor(timeout, 20*time.Millisecond, func() string {
		return "ScaleRequest " + ns + "/" + name + " to be Scaled=" + string(status) + " " + reason + "; last: " + framework.DescribeStatus(last)
	}, func(ctx context.Context) bool {
		sr, err := client.ZerowakeV1alpha1().ScaleRequests(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		last = sr
		c := meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionScaled)
		return c != nil && c.ObservedGeneration == sr.Generation && c.Status == status && c.Reason == reason
	})
	return last
}
