package e2e

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
)

// TestFailureReasons: each runtime failure ends in phase Failed, a condition with its reason
// and a Warning event that says what is wrong.
func TestFailureReasons(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, apiVersion, kind string
		setup                  func(t *testing.T, ns string)
		reason                 string
		message                string
	}{
		{name: "missing", apiVersion: "apps/v1", kind: "Deployment",
			reason: v1alpha1.ReasonTargetNotFound, message: "apps/v1 Deployment/missing does not exist in namespace"},
		{name: "widget", apiVersion: "example.com/v1", kind: "Widget",
			reason: v1alpha1.ReasonKindUnknown, message: "does not serve kind example.com/v1 Widget/widget"},
		{name: "settings", apiVersion: "v1", kind: "ConfigMap",
			setup: func(t *testing.T, ns string) {
				cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "settings", Namespace: ns}}
				if _, err := kube.CoreV1().ConfigMaps(ns).Create(testContext(t), cm, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			},
			reason: v1alpha1.ReasonNoScaleSubresource, message: "kind ConfigMap has no /scale subresource"},
		{name: "pods", apiVersion: "apps/v1", kind: "ReplicaSet",
			reason: v1alpha1.ReasonKindNotAllowed, message: "not allowed to scale ReplicaSet.apps"},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			t.Parallel()
			ns := newNamespace(t)
			if tc.setup != nil {
				tc.setup(t, ns)
			}
			createScaleRequest(t, newScaleRequest(ns, tc.name, tc.apiVersion, tc.kind, 1))
			sr := waitForScaleRequest(t, ns, tc.name, "Failed", inPhase(v1alpha1.PhaseFailed))
			cond := expectCondition(t, sr, v1alpha1.ConditionScaled, metav1.ConditionFalse, tc.reason)
			if !strings.Contains(cond.Message, tc.message) {
				t.Errorf("condition message %q does not contain %q", cond.Message, tc.message)
			}
			if msg := waitForEvent(t, ns, tc.name, corev1.EventTypeWarning, tc.reason); !strings.Contains(msg, tc.message) {
				t.Errorf("event message %q does not contain %q", msg, tc.message)
			}
		})
	}
}

// TestMissingTargetRecovers: a target created after its ScaleRequest is found on a re-check.
func TestMissingTargetRecovers(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	createScaleRequest(t, newScaleRequest(ns, "late", "apps/v1", "Deployment", 1))
	waitForScaleRequest(t, ns, "late", "Failed", inPhase(v1alpha1.PhaseFailed))
	createDeployment(t, ns, "late", 0)
	waitForScaleRequest(t, ns, "late", "Ready", inPhase(v1alpha1.PhaseReady))
}

// TestReadyTimeout: a target whose pods can never be scheduled fails with ReadyTimeout after
// the controller's --ready-timeout.
func TestReadyTimeout(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "stuck", Namespace: ns, Labels: map[string]string{v1alpha1.LabelWake: "true"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "stuck"}},
			Template: podTemplate("stuck"),
		},
	}
	d.Spec.Template.Spec.NodeSelector = map[string]string{"zerowake.dev/no-such-node": "true"}
	if _, err := kube.AppsV1().Deployments(ns).Create(testContext(t), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createScaleRequest(t, newScaleRequest(ns, "stuck", "apps/v1", "Deployment", 1))

	waitForScaleRequest(t, ns, "stuck", "Scaling", inPhase(v1alpha1.PhaseScaling))
	sr := waitForScaleRequest(t, ns, "stuck", "Failed", inPhase(v1alpha1.PhaseFailed))
	expectCondition(t, sr, v1alpha1.ConditionScaled, metav1.ConditionTrue, v1alpha1.ReasonScaledFromZero)
	cond := expectCondition(t, sr, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonReadyTimeout)
	if !strings.Contains(cond.Message, "did not get 1 ready replicas within 15s") {
		t.Errorf("message: %q", cond.Message)
	}
	waitForEvent(t, ns, "stuck", corev1.EventTypeWarning, v1alpha1.ReasonReadyTimeout)
}
