package faults

import (
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
)

// TestAdmissionRejectsOversized completes e2e's TestAdmissionRejectsInvalidSpecs (wrong types,
// missing fields, out-of-range numbers, malformed references, unknown fields) with oversized and
// out-of-format values, in spec and in metadata: the real apiserver refuses each with a message
// that says what is wrong, so the controller never sees them.
func TestAdmissionRejectsOversized(t *testing.T) {
	ns := newNamespace(t)
	dyn, err := dynamic.NewForConfig(cluster.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	resource := dyn.Resource(v1alpha1.SchemeGroupVersion.WithResource("scalerequests")).Namespace(ns)
	valid := func() map[string]any {
		return map[string]any{
			"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": "ScaleRequest",
			"metadata": map[string]any{"name": "bad"},
			"spec":     map[string]any{"scaleTargetRef": map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}},
		}
	}
	spec := func(obj map[string]any) map[string]any { return obj["spec"].(map[string]any) }
	metadata := func(obj map[string]any) map[string]any { return obj["metadata"].(map[string]any) }

	for _, tc := range []struct {
		name   string
		mutate func(obj map[string]any)
		want   []string
	}{
		{"requestedAt oversized", func(o map[string]any) {
			spec(o)["requestedAt"] = "2026-11-26T10:00:00.000000Z" + strings.Repeat("0", 10000)
		}, []string{`spec.requestedAt: Invalid value: "2026-11-26T10:00:00.000000Z000`, "must be of type date-time"}},
		{"requestedAt past year 9999", func(o map[string]any) { spec(o)["requestedAt"] = "10000-01-01T00:00:00Z" },
			[]string{`spec.requestedAt in body must be of type date-time: "10000-01-01T00:00:00Z"`}},
		{"minReplicas beyond int32", func(o map[string]any) { spec(o)["minReplicas"] = int64(1) << 32 },
			[]string{"spec.minReplicas: Invalid value: 4294967296: spec.minReplicas in body should be less than or equal to 1000"}},
		{"minReplicas fractional", func(o map[string]any) { spec(o)["minReplicas"] = 1.5 },
			[]string{"spec.minReplicas in body must be of type int32"}},
		{"apiVersion oversized", func(o map[string]any) {
			spec(o)["scaleTargetRef"].(map[string]any)["apiVersion"] = strings.Repeat("a", 318) + "/v1"
		}, []string{"spec.scaleTargetRef.apiVersion: Too long: may not be more than 317 bytes"}},
		{"name oversized", func(o map[string]any) { metadata(o)["name"] = strings.Repeat("a", 254) },
			[]string{"metadata.name: Invalid value", "must be no more than 253 characters"}},
		{"label value oversized", func(o map[string]any) { metadata(o)["labels"] = map[string]any{"app": strings.Repeat("x", 64)} },
			[]string{"metadata.labels: Invalid value", "must be no more than 63 bytes"}},
		{"annotations oversized", func(o map[string]any) { metadata(o)["annotations"] = map[string]any{"a": strings.Repeat("x", 300<<10)} },
			[]string{"metadata.annotations: Too long: may not be more than 262144 bytes"}},
		{"object beyond the request size limit", func(o map[string]any) {
			metadata(o)["annotations"] = map[string]any{"a": strings.Repeat("x", 4<<20)}
		}, []string{"Request entity too large: limit is 3145728"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := valid()
			tc.mutate(obj)
			ctx := testContext(t, 30*time.Second)
			_, err := resource.Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict})
			if err == nil {
				_ = resource.Delete(ctx, metadata(obj)["name"].(string), metav1.DeleteOptions{})
				t.Fatal("accepted")
			}
			if !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) && !apierrors.IsRequestEntityTooLargeError(err) {
				t.Fatalf("want Invalid, BadRequest or RequestEntityTooLarge, got %v", err)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("message does not say %q:\n%.2000s", want, err)
				}
			}
		})
	}
}
