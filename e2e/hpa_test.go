package e2e

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
)

// TestCoexistsWithHPA: the real HPA controller (in kube-controller-manager) does nothing for a
// target at zero; the controller wakes it, the HPA then raises it to its own minimum, and the
// controller never lowers that, not even on a new signal.
func TestCoexistsWithHPA(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	createDeployment(t, ns, "web", 0)
	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "web"},
			MinReplicas:    ptr.To[int32](3),
			MaxReplicas:    5,
			Metrics: []autoscalingv2.MetricSpec{{Type: autoscalingv2.ResourceMetricSourceType, Resource: &autoscalingv2.ResourceMetricSource{
				Name: "cpu", Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptr.To[int32](50)},
			}}},
		},
	}
	if _, err := kube.AutoscalingV2().HorizontalPodAutoscalers(ns).Create(testContext(t), hpa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Record every replica count the Deployment's spec takes from here on.
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	w, err := kube.AppsV1().Deployments(ns).Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", "web").String()})
	if err != nil {
		t.Fatal(err)
	}
	counts := make(chan int32, 100)
	go func() {
		defer close(counts)
		for e := range w.ResultChan() {
			if d, ok := e.Object.(*appsv1.Deployment); ok && e.Type != watch.Error {
				counts <- *d.Spec.Replicas
			}
		}
	}()

	createScaleRequest(t, newScaleRequest(ns, "web", "apps/v1", "Deployment", 1))
	waitForScaleRequest(t, ns, "web", "Scaled", func(sr *v1alpha1.ScaleRequest) bool {
		return sr.Status.Phase == v1alpha1.PhaseScaling || sr.Status.Phase == v1alpha1.PhaseReady
	})
	waitForDeployment(t, ns, "web", "raised to the HPA minimum", func(d *appsv1.Deployment) bool { return *d.Spec.Replicas == 3 })
	waitForScaleRequest(t, ns, "web", "Ready", inPhase(v1alpha1.PhaseReady))

	// A new signal while the HPA holds the target at 3 must write nothing to it.
	bumpRequestedAt(t, ns, "web")
	sr := waitForScaleRequest(t, ns, "web", "Ready for the new signal", func(sr *v1alpha1.ScaleRequest) bool {
		return sr.Generation == 2 && inPhase(v1alpha1.PhaseReady)(sr)
	})
	expectCondition(t, sr, v1alpha1.ConditionScaled, metav1.ConditionTrue, v1alpha1.ReasonAlreadyScaled)
	// Give any wrong write time to show, then check the whole history: never lowered.
	time.Sleep(3 * time.Second)
	cancel()
	var history []int32
	for c := range counts {
		history = append(history, c)
	}
	for i := 1; i < len(history); i++ {
		if history[i] < history[i-1] {
			t.Fatalf("replicas were lowered: history %v", history)
		}
	}
	if len(history) == 0 || history[len(history)-1] != 3 {
		t.Fatalf("replica history %v, want it to end at the HPA minimum 3", history)
	}
}
