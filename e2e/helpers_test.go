package e2e

import (
	"context"
	"strconv"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/e2e/framework"
	"github.com/zerowake/zerowake/hack/localcluster"
)

// waitTimeout bounds every wait, so a failure is fast and says what it was waiting for.
const waitTimeout = 45 * time.Second

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newNamespace(t *testing.T) string {
	return localcluster.NewNamespace(t, cluster)
}

func podTemplate(app string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "registry.example/app:1",
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceCPU: mustQuantity("10m"),
			}},
		}}},
	}
}

func createDeployment(t *testing.T, ns, name string, replicas int32) *appsv1.Deployment {
	t.Helper()
	return createDeploymentAllowing(t, ns, name, replicas, 0)
}

// createDeploymentAllowing creates a marked Deployment whose owner lets a wake ask for up to
// maxReplicas (the annotation; 0 leaves it out, and the controller's default of 1 applies).
func createDeploymentAllowing(t *testing.T, ns, name string, replicas, maxReplicas int32) *appsv1.Deployment {
	t.Helper()
	var annotations map[string]string
	if maxReplicas > 0 {
		annotations = map[string]string{v1alpha1.AnnotationMaxReplicas: strconv.Itoa(int(maxReplicas))}
	}
	d := &appsv1.Deployment{
		// Marked by its owner as wakeable: the controller scales only such workloads.
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{v1alpha1.LabelWake: "true"},
			Annotations: annotations},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: podTemplate(name),
		},
	}
	d, err := kube.AppsV1().Deployments(ns).Create(testContext(t), d, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating deployment: %v", err)
	}
	return d
}

func createStatefulSet(t *testing.T, ns, name string, replicas int32) {
	t.Helper()
	s := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{v1alpha1.LabelWake: "true"}},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    ptr.To(replicas),
			ServiceName: name,
			Selector:    &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template:    podTemplate(name),
		},
	}
	if _, err := kube.AppsV1().StatefulSets(ns).Create(testContext(t), s, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating statefulset: %v", err)
	}
}

func newScaleRequest(ns, name, apiVersion, kind string, minReplicas int32) *v1alpha1.ScaleRequest {
	return &v1alpha1.ScaleRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.ScaleRequestSpec{
			ScaleTargetRef: v1alpha1.CrossVersionObjectReference{APIVersion: apiVersion, Kind: kind, Name: name},
			MinReplicas:    minReplicas,
			RequestedAt:    &metav1.MicroTime{Time: time.Now()},
		},
	}
}

func createScaleRequest(t *testing.T, sr *v1alpha1.ScaleRequest) {
	t.Helper()
	if _, err := client.ZerowakeV1alpha1().ScaleRequests(sr.Namespace).Create(testContext(t), sr, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating ScaleRequest: %v", err)
	}
}

// waitForScaleRequest waits until done accepts the ScaleRequest and returns it.
func waitForScaleRequest(t *testing.T, ns, name, what string, done func(*v1alpha1.ScaleRequest) bool) *v1alpha1.ScaleRequest {
	t.Helper()
	var last *v1alpha1.ScaleRequest
	err := wait.PollUntilContextTimeout(testContext(t), 20*time.Millisecond, waitTimeout, true, func(ctx context.Context) (bool, error) {
		sr, err := client.ZerowakeV1alpha1().ScaleRequests(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = sr
		return done(sr), nil
	})
	if err != nil {
		t.Fatalf("ScaleRequest %s/%s never became %s; last status: %s\ncontroller log:\n%s", ns, name, what, framework.DescribeStatus(last), shared.Tail(15))
	}
	return last
}

// latestSignal reports the phase reached by the latest generation.
func inPhase(phase v1alpha1.ScaleRequestPhase) func(*v1alpha1.ScaleRequest) bool {
	return func(sr *v1alpha1.ScaleRequest) bool {
		return sr.Status.ObservedGeneration == sr.Generation && sr.Status.Phase == phase
	}
}

func expectCondition(t *testing.T, sr *v1alpha1.ScaleRequest, condType string, status metav1.ConditionStatus, reason string) *metav1.Condition {
	t.Helper()
	c := meta.FindStatusCondition(sr.Status.Conditions, condType)
	if c == nil || c.Status != status || c.Reason != reason || c.ObservedGeneration != sr.Generation {
		t.Fatalf("want %s=%s %s for generation %d; status: %s", condType, status, reason, sr.Generation, framework.DescribeStatus(sr))
	}
	return c
}

// waitForEvent waits for an event of the given type and reason about the ScaleRequest and
// returns its message.
func waitForEvent(t *testing.T, ns, name, eventType, reason string) string {
	t.Helper()
	var message string
	selector := fields.Set{"involvedObject.name": name, "involvedObject.kind": "ScaleRequest", "reason": reason}.AsSelector().String()
	err := wait.PollUntilContextTimeout(testContext(t), 50*time.Millisecond, waitTimeout, true, func(ctx context.Context) (bool, error) {
		events, err := kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: selector})
		if err != nil {
			return false, nil
		}
		for _, e := range events.Items {
			if e.Type == eventType {
				message = e.Message
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no %s event %s for ScaleRequest %s/%s", eventType, reason, ns, name)
	}
	return message
}

// waitForDeployment waits until done accepts the Deployment.
func waitForDeployment(t *testing.T, ns, name, what string, done func(*appsv1.Deployment) bool) *appsv1.Deployment {
	t.Helper()
	var last *appsv1.Deployment
	err := wait.PollUntilContextTimeout(testContext(t), 20*time.Millisecond, waitTimeout, true, func(ctx context.Context) (bool, error) {
		d, err := kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = d
		return done(d), nil
	})
	if err != nil {
		t.Fatalf("Deployment %s/%s never %s; last: spec.replicas=%v status=%+v", ns, name, what, ptr.Deref(last.Spec.Replicas, -1), last.Status)
	}
	return last
}

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }
