package e2e

import (
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
)

// TestAdmissionRejectsInvalidSpecs sends malformed ScaleRequests to the real API server, with
// strict field validation as kubectl uses, and checks each is refused with a message a person
// can act on.
func TestAdmissionRejectsInvalidSpecs(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	dyn, err := dynamic.NewForConfig(cluster.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	resource := dyn.Resource(v1alpha1.SchemeGroupVersion.WithResource("scalerequests")).Namespace(ns)

	ref := func(apiVersion, kind, name any) map[string]any {
		return map[string]any{"apiVersion": apiVersion, "kind": kind, "name": name}
	}
	valid := func() map[string]any { return ref("apps/v1", "Deployment", "web") }
	long := strings.Repeat("a", 254)

	for _, tc := range []struct {
		name string
		spec any // nil: no spec at all
		want string
	}{
		{"no spec", nil, `spec: Required value`},
		{"no target", map[string]any{"minReplicas": 1}, `spec.scaleTargetRef: Required value`},
		{"target not an object", map[string]any{"scaleTargetRef": "apps/v1/Deployment/web"}, `spec.scaleTargetRef: Invalid value: "string": spec.scaleTargetRef in body must be of type object`},
		{"no name", map[string]any{"scaleTargetRef": map[string]any{"apiVersion": "apps/v1", "kind": "Deployment"}}, `spec.scaleTargetRef.name: Required value`},
		{"no kind", map[string]any{"scaleTargetRef": map[string]any{"apiVersion": "apps/v1", "name": "web"}}, `spec.scaleTargetRef.kind: Required value`},
		{"no apiVersion", map[string]any{"scaleTargetRef": map[string]any{"kind": "Deployment", "name": "web"}}, `spec.scaleTargetRef.apiVersion: Required value`},
		{"empty name", map[string]any{"scaleTargetRef": ref("apps/v1", "Deployment", "")}, `spec.scaleTargetRef.name in body should be at least 1 chars long`},
		{"uppercase name", map[string]any{"scaleTargetRef": ref("apps/v1", "Deployment", "Web_1")}, `spec.scaleTargetRef.name: Invalid value: name must be a lowercase DNS subdomain name, like 'web'`},
		{"name too long", map[string]any{"scaleTargetRef": ref("apps/v1", "Deployment", long)}, `spec.scaleTargetRef.name: Too long: may not be more than 253`},
		{"name not a string", map[string]any{"scaleTargetRef": ref("apps/v1", "Deployment", 7)}, `spec.scaleTargetRef.name: Invalid value: "integer": spec.scaleTargetRef.name in body must be of type string`},
		{"lowercase kind", map[string]any{"scaleTargetRef": ref("apps/v1", "deployment", "web")}, `spec.scaleTargetRef.kind: Invalid value: kind must be a Kubernetes kind in CamelCase, like 'Deployment'`},
		{"kind with space", map[string]any{"scaleTargetRef": ref("apps/v1", "Deploy ment", "web")}, `kind must be a Kubernetes kind in CamelCase`},
		{"kind too long", map[string]any{"scaleTargetRef": ref("apps/v1", "D"+strings.Repeat("x", 63), "web")}, `spec.scaleTargetRef.kind: Too long: may not be more than 63`},
		{"apiVersion without version", map[string]any{"scaleTargetRef": ref("apps", "Deployment", "web")}, `spec.scaleTargetRef.apiVersion: Invalid value: apiVersion must be a version like 'v1' or a group/version like 'apps/v1'`},
		{"apiVersion with extra segment", map[string]any{"scaleTargetRef": ref("apps/v1/x", "Deployment", "web")}, `apiVersion must be a version like 'v1' or a group/version like 'apps/v1'`},
		{"apiVersion uppercase group", map[string]any{"scaleTargetRef": ref("Apps/v1", "Deployment", "web")}, `apiVersion must be a version like 'v1' or a group/version like 'apps/v1'`},
		{"minReplicas zero", map[string]any{"scaleTargetRef": valid(), "minReplicas": 0}, `spec.minReplicas: Invalid value: 0: spec.minReplicas in body should be greater than or equal to 1`},
		{"minReplicas negative", map[string]any{"scaleTargetRef": valid(), "minReplicas": -3}, `spec.minReplicas in body should be greater than or equal to 1`},
		{"minReplicas too large", map[string]any{"scaleTargetRef": valid(), "minReplicas": 1001}, `spec.minReplicas: Invalid value: 1001: spec.minReplicas in body should be less than or equal to 1000`},
		{"minReplicas a string", map[string]any{"scaleTargetRef": valid(), "minReplicas": "two"}, `spec.minReplicas: Invalid value: "string": spec.minReplicas in body must be of type integer`},
		{"requestedAt not a time", map[string]any{"scaleTargetRef": valid(), "requestedAt": "yesterday"}, `spec.requestedAt: Invalid value: "yesterday": spec.requestedAt in body must be of type date-time`},
		{"unknown spec field", map[string]any{"scaleTargetRef": valid(), "replicas": 3}, `unknown field "spec.replicas"`},
		{"target in another namespace", map[string]any{"scaleTargetRef": map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": "kube-system"}}, `unknown field "spec.scaleTargetRef.namespace"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := map[string]any{
				"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": "ScaleRequest",
				"metadata": map[string]any{"name": "bad"},
			}
			if tc.spec != nil {
				obj["spec"] = tc.spec
			}
			_, err := resource.Create(testContext(t), &unstructured.Unstructured{Object: obj},
				metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict})
			if err == nil {
				_ = resource.Delete(testContext(t), "bad", metav1.DeleteOptions{})
				t.Fatalf("accepted %v", tc.spec)
			}
			if !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) {
				t.Fatalf("want Invalid or BadRequest, got %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("message does not say %q:\n%v", tc.want, err)
			}
		})
	}
}

// TestDefaults: minReplicas defaults to 1, so the smallest valid request is just a target.
func TestDefaults(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	sr := newScaleRequest(ns, "web", "apps/v1", "Deployment", 0)
	sr.Spec.RequestedAt = nil
	created, err := client.ZerowakeV1alpha1().ScaleRequests(ns).Create(testContext(t), sr, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if created.Spec.MinReplicas != 1 {
		t.Fatalf("minReplicas defaulted to %d", created.Spec.MinReplicas)
	}
	// Before the controller acts, a request reads as Pending (a default, not a write).
	if created.Status.Phase != v1alpha1.PhasePending || created.Status.ObservedGeneration != 0 {
		t.Fatalf("new request's status: %+v", created.Status)
	}
}
