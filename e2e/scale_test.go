package e2e

import (
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/e2e/framework"
)

func TestScaleDeploymentFromZero(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	createDeploymentAllowing(t, ns, "web", 0, 2)
	createScaleRequest(t, newScaleRequest(ns, "web", "apps/v1", "Deployment", 2))

	sr := waitForScaleRequest(t, ns, "web", "Ready", inPhase(v1alpha1.PhaseReady))
	scaled := expectCondition(t, sr, v1alpha1.ConditionScaled, metav1.ConditionTrue, v1alpha1.ReasonScaledFromZero)
	ready := expectCondition(t, sr, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonTargetReady)
	if ready.LastTransitionTime.Before(&scaled.LastTransitionTime) {
		t.Errorf("Ready (%s) before Scaled (%s)", ready.LastTransitionTime, scaled.LastTransitionTime)
	}
	if sr.Status.PreviousReplicas == nil || *sr.Status.PreviousReplicas != 0 || sr.Status.Replicas != 2 || sr.Status.ReadyReplicas != 2 {
		t.Errorf("status replicas: %s", framework.DescribeStatus(sr))
	}
	if sr.Status.ColdStartDuration == nil || sr.Status.ColdStartDuration.Duration <= 0 || sr.Status.ReadyTime == nil || sr.Status.LastScaleTime == nil {
		t.Errorf("cold start not recorded: %+v", sr.Status)
	}
	d := waitForDeployment(t, ns, "web", "ready with 2 replicas", func(d *appsv1.Deployment) bool { return d.Status.ReadyReplicas == 2 })
	if *d.Spec.Replicas != 2 {
		t.Errorf("deployment spec.replicas = %d, want 2", *d.Spec.Replicas)
	}
	if msg := waitForEvent(t, ns, "web", "Normal", v1alpha1.ReasonScaledFromZero); msg != "Scaled Deployment/web from 0 to 2 replicas" {
		t.Errorf("scale event: %q", msg)
	}
	if msg := waitForEvent(t, ns, "web", "Normal", v1alpha1.ReasonTargetReady); !strings.Contains(msg, "2/2 ready replicas") {
		t.Errorf("ready event: %q", msg)
	}
}

func TestScaleStatefulSetFromZero(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	createStatefulSet(t, ns, "db", 0)
	createScaleRequest(t, newScaleRequest(ns, "db", "apps/v1", "StatefulSet", 1))

	sr := waitForScaleRequest(t, ns, "db", "Ready", inPhase(v1alpha1.PhaseReady))
	expectCondition(t, sr, v1alpha1.ConditionScaled, metav1.ConditionTrue, v1alpha1.ReasonScaledFromZero)
	expectCondition(t, sr, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonTargetReady)
	if sr.Status.ColdStartDuration == nil {
		t.Error("cold start not recorded")
	}
	sts, err := kube.AppsV1().StatefulSets(ns).Get(testContext(t), "db", metav1.GetOptions{})
	if err != nil || *sts.Spec.Replicas != 1 || sts.Status.ReadyReplicas < 1 {
		t.Fatalf("statefulset: %v %+v", err, sts)
	}
}

// TestResignal: a workload scaled back to zero by its idler is woken again by bumping
// spec.requestedAt, which is a new generation the controller serves.
func TestResignal(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	createDeployment(t, ns, "web", 0)
	createScaleRequest(t, newScaleRequest(ns, "web", "apps/v1", "Deployment", 1))
	first := waitForScaleRequest(t, ns, "web", "Ready", inPhase(v1alpha1.PhaseReady))

	// The idler scales the workload to zero.
	scaleDeployment(t, ns, "web", 0)
	waitForDeployment(t, ns, "web", "scaled to zero", func(d *appsv1.Deployment) bool { return d.Status.Replicas == 0 })

	bumpRequestedAt(t, ns, "web")
	sr := waitForScaleRequest(t, ns, "web", "Ready for the new signal", func(sr *v1alpha1.ScaleRequest) bool {
		return sr.Generation > first.Generation && inPhase(v1alpha1.PhaseReady)(sr)
	})
	expectCondition(t, sr, v1alpha1.ConditionScaled, metav1.ConditionTrue, v1alpha1.ReasonScaledFromZero)
	if !sr.Status.ReadyTime.After(first.Status.ReadyTime.Time) {
		t.Errorf("readyTime not renewed for the new signal: %v then %v", first.Status.ReadyTime, sr.Status.ReadyTime)
	}
	waitForDeployment(t, ns, "web", "woken again", func(d *appsv1.Deployment) bool { return d.Status.ReadyReplicas == 1 })
}

func TestTargetAboveMinimumIsLeftAlone(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	before := createDeployment(t, ns, "web", 3)
	createScaleRequest(t, newScaleRequest(ns, "web", "apps/v1", "Deployment", 1))

	sr := waitForScaleRequest(t, ns, "web", "Ready", inPhase(v1alpha1.PhaseReady))
	expectCondition(t, sr, v1alpha1.ConditionScaled, metav1.ConditionTrue, v1alpha1.ReasonAlreadyScaled)
	if sr.Status.LastScaleTime != nil {
		t.Errorf("lastScaleTime set although nothing was scaled: %v", sr.Status.LastScaleTime)
	}
	d, err := kube.AppsV1().Deployments(ns).Get(testContext(t), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 3 || d.Generation != before.Generation {
		t.Fatalf("deployment changed: replicas %d, generation %d -> %d", *d.Spec.Replicas, before.Generation, d.Generation)
	}
}

func scaleDeployment(t *testing.T, ns, name string, replicas int32) {
	t.Helper()
	scale, err := kube.AppsV1().Deployments(ns).GetScale(testContext(t), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = replicas
	if _, err := kube.AppsV1().Deployments(ns).UpdateScale(testContext(t), name, scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func bumpRequestedAt(t *testing.T, ns, name string) {
	t.Helper()
	patch := `{"spec":{"requestedAt":"` + time.Now().UTC().Format(metav1.RFC3339Micro) + `"}}`
	if _, err := client.ZerowakeV1alpha1().ScaleRequests(ns).Patch(testContext(t), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}
