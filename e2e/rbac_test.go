package e2e

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/zerowake/zerowake/generated/clientset/versioned"
)

// TestControllerIdentityIsLeastPrivilege: the ServiceAccount that deploy/ binds, which every
// test here runs the controller as, is refused what the controller must never do.
func TestControllerIdentityIsLeastPrivilege(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	createDeployment(t, ns, "web", 0)
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "rs", Namespace: ns},
		Spec: appsv1.ReplicaSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "rs"}},
			Template: podTemplate("rs"), Replicas: new(int32)},
	}
	if _, err := kube.AppsV1().ReplicaSets(ns).Create(testContext(t), rs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createScaleRequest(t, newScaleRequest(ns, "web", "apps/v1", "Deployment", 1))

	as, err := kubernetes.NewForConfig(controllerConfig)
	if err != nil {
		t.Fatal(err)
	}
	zw, err := versioned.NewForConfig(controllerConfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	scaleUp := []byte(`{"spec":{"replicas":1}}`)
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"delete a deployment", func() error { return as.AppsV1().Deployments(ns).Delete(ctx, "web", metav1.DeleteOptions{}) }},
		{"update a deployment's spec", func() error {
			_, err := as.AppsV1().Deployments(ns).Patch(ctx, "web", types.MergePatchType, []byte(`{"spec":{"paused":true}}`), metav1.PatchOptions{})
			return err
		}},
		{"read a secret", func() error { _, err := as.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); return err }},
		{"scale a kind that is not allowed", func() error {
			_, err := as.AppsV1().ReplicaSets(ns).Patch(ctx, "rs", types.MergePatchType, scaleUp, metav1.PatchOptions{}, "scale")
			return err
		}},
		{"write a ScaleRequest's spec", func() error {
			_, err := zw.ZerowakeV1alpha1().ScaleRequests(ns).Patch(ctx, "web", types.MergePatchType, []byte(`{"spec":{"minReplicas":5}}`), metav1.PatchOptions{})
			return err
		}},
		{"create a ScaleRequest", func() error {
			_, err := zw.ZerowakeV1alpha1().ScaleRequests(ns).Create(ctx, newScaleRequest(ns, "other", "apps/v1", "Deployment", 1), metav1.CreateOptions{})
			return err
		}},
		{"delete a ScaleRequest", func() error {
			return zw.ZerowakeV1alpha1().ScaleRequests(ns).Delete(ctx, "web", metav1.DeleteOptions{})
		}},
		{"list pods", func() error {
			_, err := as.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !apierrors.IsForbidden(err) {
				t.Fatalf("want Forbidden, got %v", err)
			}
		})
	}
}
