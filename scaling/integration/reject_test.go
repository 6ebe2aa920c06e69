package integration

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/zerowake/zerowake/hack/localcluster"
	"github.com/zerowake/zerowake/scaling"
)

var deployments = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}

// frozenLabel marks the Deployments the test policy refuses to scale. A Scale carries none of
// its Deployment's labels (so a binding's objectSelector cannot see them); it carries the
// Deployment's selector as status.selector, so the mark is put there too, where the policy
// reads it.
const frozenLabel = "zerowake.test/frozen"

func createDeployment(t *testing.T, ns, name string, replicas int32, frozen string) {
	t.Helper()
	labels := map[string]string{"app": name}
	if frozen != "" {
		labels[frozenLabel] = frozen
	}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
			},
		},
	}
	if _, err := kube.AppsV1().Deployments(ns).Create(testContext(t), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func replicasOf(t *testing.T, ns, name string) int32 {
	t.Helper()
	d, err := kube.AppsV1().Deployments(ns).Get(testContext(t), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return *d.Spec.Replicas
}

func target(ns, name string) scaling.Target {
	return scaling.Target{Namespace: ns, Ref: autoscalingv1.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: name}}
}

var (
	jsonPatch  = request{http.MethodPatch, string(types.JSONPatchType)}
	get        = request{http.MethodGet, ""}
	mergePatch = request{http.MethodPatch, string(types.MergePatchType)}
)

// scaleUp calls ScaleUp again while it reports a Conflict, as callers do: the Deployment
// controller writes a new Deployment's status for a while, and each write moves the
// resourceVersion that guards ScaleUp's write. The recorder then holds the last call's requests.
func scaleUp(t *testing.T, handler *scaling.ScaleHandler, rec *recorder, target scaling.Target, min int32) (scaling.Result, error) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		rec.take()
		result, err := handler.ScaleUp(testContext(t), target, min)
		if scaling.ReasonOf(err) != scaling.ReasonConflict || attempt == 10 {
			return result, err
		}
		t.Logf("%s: attempt %d: %v", target, attempt, err)
	}
}

func expectRequests(t *testing.T, rec *recorder, want ...request) {
	t.Helper()
	got := rec.take()
	if len(got) != len(want) {
		t.Fatalf("/scale requests %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("/scale requests %v, want %v", got, want)
		}
	}
}

// TestTestOperationFailureOnTheWire pins what the API server answers when the from-zero patch's
// test operation fails, which is all ScaleHandler may read as "not at zero", and checks that
// such a target still goes the GET and guarded PATCH way.
func TestTestOperationFailureOnTheWire(t *testing.T) {
	t.Parallel()
	ns := localcluster.NewNamespace(t, cluster)
	ctx := testContext(t)
	createDeployment(t, ns, "up", 2, "")
	createDeployment(t, ns, "down", 0, "")
	handler, scales, rec := newHandler(t, cluster.RESTConfig())

	patch := []byte(`[{"op":"test","path":"/spec","value":{}},{"op":"add","path":"/spec/replicas","value":3}]`)
	_, err := scales.Scales(ns).Patch(ctx, deployments, "up", types.JSONPatchType, patch, metav1.PatchOptions{})
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		t.Fatalf("the test operation did not fail with an API status: %v", err)
	}
	s := status.Status()
	wire, _ := json.Marshal(s)
	t.Logf("the API server's answer to a failed test operation: %s", wire)
	if s.Code != http.StatusUnprocessableEntity || s.Reason != metav1.StatusReasonInvalid ||
		s.Message != "the server rejected our request due to an error in our request" {
		t.Fatalf("unexpected answer: %s", wire)
	}
	if d := s.Details; d != nil && (d.Group != "" || d.Kind != "" || d.Name != "" || len(d.Causes) != 0) {
		t.Fatalf("the answer names an object or causes: %s", wire)
	}
	rec.take()

	result, err := scaleUp(t, handler, rec, target(ns, "up"), 3)
	if err != nil {
		t.Fatal(err)
	}
	if !result.Scaled || result.PreviousReplicas != 2 || result.Replicas != 3 || replicasOf(t, ns, "up") != 3 {
		t.Fatalf("result %+v", result)
	}
	expectRequests(t, rec, jsonPatch, get, mergePatch)

	if result, err := handler.ScaleUp(ctx, target(ns, "down"), 2); err != nil || !result.Scaled || result.Replicas != 2 {
		t.Fatalf("from zero: %+v %v", result, err)
	}
	expectRequests(t, rec, jsonPatch)
}

// TestRefusalsAreRejected: a ValidatingAdmissionPolicy that denies scaling marked Deployments,
// with its default reason (422 Invalid) and with reason Forbidden (403), is ScaleHandler's
// Rejected with the policy's message, whether it answers the from-zero patch or the guarded
// one; an RBAC denial stays Forbidden; an unmarked Deployment is scaled as usual.
func TestRefusalsAreRejected(t *testing.T) {
	t.Parallel()
	ns := localcluster.NewNamespace(t, cluster)
	ctx := testContext(t)
	installFreezePolicy(t, ns)

	createDeployment(t, ns, "frozen", 0, "true")
	createDeployment(t, ns, "frozen-up", 1, "true")
	createDeployment(t, ns, "forbidden", 0, "forbidden")
	createDeployment(t, ns, "free", 1, "")
	waitForPolicy(t, ns, "frozen")
	handler, _, rec := newHandler(t, cluster.RESTConfig())

	for _, tc := range []struct {
		name     string
		min      int32
		code     int32
		requests []request
	}{
		{"frozen", 1, http.StatusUnprocessableEntity, []request{jsonPatch}},
		{"frozen-up", 3, http.StatusUnprocessableEntity, []request{jsonPatch, get, mergePatch}},
		{"forbidden", 1, http.StatusForbidden, []request{jsonPatch}},
	} {
		before := replicasOf(t, ns, tc.name)
		_, err := scaleUp(t, handler, rec, target(ns, tc.name), tc.min)
		if reason := scaling.ReasonOf(err); reason != scaling.ReasonRejected {
			t.Fatalf("%s: reason %q, want Rejected (err %v)", tc.name, reason, err)
		}
		var status apierrors.APIStatus
		if !errors.As(err, &status) || status.Status().Code != tc.code {
			t.Fatalf("%s: the API's answer is not carried, or not the code expected (%d): %#v", tc.name, tc.code, err)
		}
		if !strings.Contains(err.Error(), "ValidatingAdmissionPolicy 'zerowake-test-freeze'") || !strings.Contains(err.Error(), "is frozen") {
			t.Fatalf("%s: the policy's message is not carried: %v", tc.name, err)
		}
		t.Logf("%s: %d %s", tc.name, status.Status().Code, err)
		expectRequests(t, rec, tc.requests...)
		if after := replicasOf(t, ns, tc.name); after != before {
			t.Fatalf("%s: replicas %d -> %d despite the denial", tc.name, before, after)
		}
	}

	result, err := scaleUp(t, handler, rec, target(ns, "free"), 3)
	if err != nil || !result.Scaled || result.PreviousReplicas != 1 || result.Replicas != 3 {
		t.Fatalf("unmarked deployment: %+v %v", result, err)
	}
	expectRequests(t, rec, jsonPatch, get, mergePatch)

	// Someone the authorizer refuses: RBAC's 403 is Forbidden, not a refusal on the merits.
	nobody := cluster.RESTConfig()
	nobody.Impersonate = rest.ImpersonationConfig{UserName: "zerowake-test-nobody"}
	denied, _, _ := newHandler(t, nobody)
	_, err = denied.ScaleUp(ctx, target(ns, "free"), 5)
	if reason := scaling.ReasonOf(err); reason != scaling.ReasonForbidden {
		t.Fatalf("RBAC denial: reason %q, want Forbidden (err %v)", reason, err)
	}
	t.Logf("RBAC: %v", err)
}

// installFreezePolicy refuses, in namespace ns only, any scale of a marked Deployment to more
// than zero: frozen=true with the policy's default reason, frozen=forbidden with Forbidden.
func installFreezePolicy(t *testing.T, ns string) {
	t.Helper()
	ctx := testContext(t)
	name := "zerowake-test-freeze"
	forbidden := metav1.StatusReasonForbidden
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{
				ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update},
						Rule: admissionregistrationv1.Rule{
							APIGroups: []string{"apps"}, APIVersions: []string{"v1"}, Resources: []string{"deployments/scale"},
						},
					},
				}},
			},
			Validations: []admissionregistrationv1.Validation{
				{
					Expression: "!object.status.selector.contains('" + frozenLabel + "=true') || object.spec.replicas == 0",
					Message:    "this deployment is frozen: it may not be scaled up",
				},
				{
					Expression: "!object.status.selector.contains('" + frozenLabel + "=forbidden') || object.spec.replicas == 0",
					Message:    "this deployment is frozen: scaling it is forbidden",
					Reason:     &forbidden,
				},
			},
		},
	}
	// The policy is cluster-wide, so the binding confines it to this test's namespace.
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
			MatchResources: &admissionregistrationv1.MatchResources{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}},
			},
		},
	}
	policies := kube.AdmissionregistrationV1().ValidatingAdmissionPolicies()
	bindings := kube.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings()
	if _, err := policies.Create(ctx, policy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = policies.Delete(context.Background(), name, metav1.DeleteOptions{}) })
	if _, err := bindings.Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bindings.Delete(context.Background(), name, metav1.DeleteOptions{}) })
}

// waitForPolicy waits until the API server enforces the policy, which it loads asynchronously,
// probing with a dry-run scale of a frozen Deployment so that nothing is written.
func waitForPolicy(t *testing.T, ns, name string) {
	t.Helper()
	ctx := testContext(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := kube.AppsV1().Deployments(ns).UpdateScale(ctx, name,
			&autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: autoscalingv1.ScaleSpec{Replicas: 1}},
			metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil && strings.Contains(err.Error(), "is frozen") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the policy is not enforced after 30s; last answer: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
