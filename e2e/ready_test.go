package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
)

// The tests in this file hold Ready to what it promises: the target has at least minReplicas
// ready replicas now, not only once.

// wokenReady creates a marked Deployment at zero and a request for it, and waits until the
// request is Ready.
func wokenReady(t *testing.T, ns, name string) {
	t.Helper()
	createDeployment(t, ns, name, 0)
	createScaleRequest(t, newScaleRequest(ns, name, "apps/v1", "Deployment", 1))
	waitForScaleRequest(t, ns, name, "Ready", inPhase(v1alpha1.PhaseReady))
}

// TestDeletedTargetFailsItsReadyRequest: a Ready request whose target is deleted is Failed
// with TargetNotFound and a Warning event, instead of Ready for ever.
func TestDeletedTargetFailsItsReadyRequest(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	wokenReady(t, ns, "web")
	if err := kube.AppsV1().Deployments(ns).Delete(testContext(t), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	sr := waitForScaleRequest(t, ns, "web", "Failed", inPhase(v1alpha1.PhaseFailed))
	expectCondition(t, sr, v1alpha1.ConditionScaled, metav1.ConditionFalse, v1alpha1.ReasonTargetNotFound)
	if meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionReady) != nil {
		t.Fatalf("a request whose target is gone keeps a Ready condition: %+v", sr.Status.Conditions)
	}
	if msg := waitForEvent(t, ns, "web", corev1.EventTypeWarning, v1alpha1.ReasonTargetNotFound); !strings.Contains(msg, "deleted") {
		t.Fatalf("event: %s", msg)
	}
}

// TestUnmarkedTargetFailsItsReadyRequest: a Ready request whose target's owner removes the
// mark is Failed with NotOptedIn (the controller no longer follows the target, so it could
// not tell when it is scaled down), and stays so when the target is then scaled to zero.
func TestUnmarkedTargetFailsItsReadyRequest(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	wokenReady(t, ns, "web")
	ctx := testContext(t)
	if _, err := kube.AppsV1().Deployments(ns).Patch(ctx, "web", types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"`+v1alpha1.LabelWake+`":null}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	sr := waitForScaleRequest(t, ns, "web", "Failed", inPhase(v1alpha1.PhaseFailed))
	expectCondition(t, sr, v1alpha1.ConditionScaled, metav1.ConditionFalse, v1alpha1.ReasonNotOptedIn)
	waitForEvent(t, ns, "web", corev1.EventTypeWarning, v1alpha1.ReasonNotOptedIn)

	if _, err := kube.AppsV1().Deployments(ns).Patch(ctx, "web", types.MergePatchType, []byte(`{"spec":{"replicas":0}}`), metav1.PatchOptions{}, "scale"); err != nil {
		t.Fatal(err)
	}
	waitForDeployment(t, ns, "web", "at zero", func(d *appsv1.Deployment) bool { return d.Status.Replicas == 0 })
	// The request is re-checked once per window (2s): look past one.
	time.Sleep(3 * time.Second)
	sr, err := client.ZerowakeV1alpha1().ScaleRequests(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sr.Status.Phase != v1alpha1.PhaseFailed {
		t.Fatalf("phase %s for an unmarked target at zero, want Failed", sr.Status.Phase)
	}
	if d, err := kube.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{}); err != nil || *d.Spec.Replicas != 0 {
		t.Fatalf("an unmarked target was scaled again: %v %v", d.Spec.Replicas, err)
	}
}

// setPodsReady sets the Ready condition of every pod of app, as a kubelet does when a
// readiness probe starts failing (kwok leaves a running pod's conditions alone).
func setPodsReady(t *testing.T, ns, app string, ready corev1.ConditionStatus) {
	t.Helper()
	ctx := testContext(t)
	pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) == 0 {
		t.Fatalf("no pods of %s", app)
	}
	patch := []byte(`{"status":{"conditions":[{"type":"Ready","status":"` + string(ready) + `"},{"type":"ContainersReady","status":"` + string(ready) + `"}]}}`)
	for _, p := range pods.Items {
		if _, err := kube.CoreV1().Pods(ns).Patch(ctx, p.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReadyRequestHoldsWhileItsPodsAreNotReady: a Ready request whose target keeps its replica
// but loses its readiness (the crash-loop shape: replicas 1, ready 0) is Scaling with
// TargetNotReady and a Warning event, so that nobody is let through; Ready again, without a
// new signal, once the pod is ready again.
func TestReadyRequestHoldsWhileItsPodsAreNotReady(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	wokenReady(t, ns, "web")
	generation := waitForScaleRequest(t, ns, "web", "Ready", inPhase(v1alpha1.PhaseReady)).Generation

	setPodsReady(t, ns, "web", corev1.ConditionFalse)
	sr := waitForScaleRequest(t, ns, "web", "Scaling", inPhase(v1alpha1.PhaseScaling))
	expectCondition(t, sr, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonTargetNotReady)
	if sr.Status.ReadyReplicas != 0 || sr.Status.Replicas != 1 {
		t.Fatalf("status says %d/%d ready, want 0/1", sr.Status.ReadyReplicas, sr.Status.Replicas)
	}
	waitForEvent(t, ns, "web", corev1.EventTypeWarning, v1alpha1.ReasonTargetNotReady)

	setPodsReady(t, ns, "web", corev1.ConditionTrue)
	sr = waitForScaleRequest(t, ns, "web", "Ready again", inPhase(v1alpha1.PhaseReady))
	expectCondition(t, sr, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonTargetReady)
	if sr.Generation != generation || sr.Status.ReadyReplicas != 1 {
		t.Fatalf("Ready again at generation %d (was %d) with %d ready; want the same signal with 1", sr.Generation, generation, sr.Status.ReadyReplicas)
	}
}

// TestLostReadinessEndsInReadyTimeout: a target that stays unready after it was Ready fails
// its request with ReadyTimeout one ready timeout (--ready-timeout=15s) after the controller
// saw readiness go, so that waiting callers get an answer.
func TestLostReadinessEndsInReadyTimeout(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	wokenReady(t, ns, "web")
	setPodsReady(t, ns, "web", corev1.ConditionFalse)
	lost := expectCondition(t, waitForScaleRequest(t, ns, "web", "Scaling", inPhase(v1alpha1.PhaseScaling)),
		v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonTargetNotReady).LastTransitionTime

	var sr *v1alpha1.ScaleRequest
	err := wait.PollUntilContextTimeout(testContext(t), 100*time.Millisecond, waitTimeout, true, func(ctx context.Context) (bool, error) {
		got, err := client.ZerowakeV1alpha1().ScaleRequests(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		sr = got
		return got.Status.Phase != v1alpha1.PhaseScaling, nil
	})
	if err != nil {
		t.Fatalf("still Scaling: %+v", sr.Status)
	}
	if sr.Status.Phase != v1alpha1.PhaseFailed {
		t.Fatalf("phase %s after lost readiness, want Failed", sr.Status.Phase)
	}
	expectCondition(t, sr, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonReadyTimeout)
	waitForEvent(t, ns, "web", corev1.EventTypeWarning, v1alpha1.ReasonReadyTimeout)
	// The condition keeps its transition time (its status stays False); the event's time is
	// when the controller gave up. Both are the controller's own clock, so the ready timeout
	// bounds the gap from below whatever the test's scheduling.
	events, err := kube.CoreV1().Events(ns).List(testContext(t), metav1.ListOptions{FieldSelector: "involvedObject.name=web,reason=" + v1alpha1.ReasonReadyTimeout})
	if err != nil || len(events.Items) == 0 {
		t.Fatalf("ReadyTimeout event: %v", err)
	}
	gaveUp := events.Items[0].FirstTimestamp
	if gaveUp.IsZero() {
		gaveUp = metav1.Time{Time: events.Items[0].EventTime.Time}
	}
	// Both times have a resolution of one second.
	if gap := gaveUp.Sub(lost.Time); gap < 15*time.Second-time.Second {
		t.Fatalf("failed %s after readiness was lost; the ready timeout is 15s", gap)
	}
}

// TestDefaultMaxReplicas: without its owner's cap, a wake may ask for one replica (the
// controller's default); asking for more is refused with a message that says how to raise it,
// and the owner's annotation serves the request without a new signal.
func TestDefaultMaxReplicas(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	createDeployment(t, ns, "web", 0)
	createScaleRequest(t, newScaleRequest(ns, "web", "apps/v1", "Deployment", 2))
	sr := waitForScaleRequest(t, ns, "web", "Failed", inPhase(v1alpha1.PhaseFailed))
	cond := expectCondition(t, sr, v1alpha1.ConditionScaled, metav1.ConditionFalse, v1alpha1.ReasonAboveOwnerCap)
	for _, want := range []string{"--default-max-replicas", "kubectl annotate deployments.apps web -n " + ns + " " + v1alpha1.AnnotationMaxReplicas + "=2"} {
		if !strings.Contains(cond.Message, want) {
			t.Fatalf("the refusal does not say %q: %s", want, cond.Message)
		}
	}
	ctx := testContext(t)
	if d, err := kube.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{}); err != nil || *d.Spec.Replicas != 0 {
		t.Fatalf("scaled above the default cap: %v %v", d.Spec.Replicas, err)
	}
	if _, err := kube.AppsV1().Deployments(ns).Patch(ctx, "web", types.MergePatchType,
		[]byte(`{"metadata":{"annotations":{"`+v1alpha1.AnnotationMaxReplicas+`":"2"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	sr = waitForScaleRequest(t, ns, "web", "Ready", inPhase(v1alpha1.PhaseReady))
	if sr.Status.ReadyReplicas != 2 {
		t.Fatalf("Ready with %d ready replicas, want 2", sr.Status.ReadyReplicas)
	}
}
