package integration

import (
	"path/filepath"
	"testing"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/zerowake/zerowake/hack/localcluster"
	"github.com/zerowake/zerowake/scaling"
)

// TestRemovedVersionIsResolvedAgain stops serving the version of a kind that ScaleHandler has
// resolved and cached, and checks that the next scale, in a single call, finds the version
// still served instead of reporting the kind unknown.
func TestRemovedVersionIsResolvedAgain(t *testing.T) {
	ctx := testContext(t)
	manifest, err := filepath.Abs(filepath.Join("testdata", "gizmos.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Kubectl(ctx, "apply", "--server-side", "-f", manifest); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = cluster.Kubectl(testContext(t), "delete", "--ignore-not-found", "-f", manifest)
	})
	if _, err := cluster.Kubectl(ctx, "wait", "--for=condition=Established", "crd/gizmos.scalingtest.zerowake.dev", "--timeout=60s"); err != nil {
		t.Fatal(err)
	}
	ns := localcluster.NewNamespace(t, cluster)
	v1 := schema.GroupVersionResource{Group: "scalingtest.zerowake.dev", Version: "v1", Resource: "gizmos"}
	v2 := v1.GroupResource().WithVersion("v2")
	dyn, err := dynamic.NewForConfig(cluster.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	gizmo := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "scalingtest.zerowake.dev/v1", "kind": "Gizmo",
		"metadata": map[string]any{"name": "g"}, "spec": map[string]any{"replicas": int64(0)},
	}}
	if _, err := dyn.Resource(v1).Namespace(ns).Create(ctx, gizmo, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	handler, _, _ := newHandler(t, cluster.RESTConfig())
	target := scaling.Target{Namespace: ns, Ref: autoscalingv1.CrossVersionObjectReference{
		APIVersion: "scalingtest.zerowake.dev/v1", Kind: "Gizmo", Name: "g"}}
	result, err := handler.ScaleUp(ctx, target, 1)
	if err != nil || result.Resource != v2 {
		t.Fatalf("first scale: %+v %v (want the preferred version, v2)", result, err)
	}

	if _, err := cluster.Kubectl(ctx, "patch", "crd", "gizmos.scalingtest.zerowake.dev", "--type=json",
		"-p", `[{"op":"test","path":"/spec/versions/1/name","value":"v2"},{"op":"replace","path":"/spec/versions/1/served","value":false}]`); err != nil {
		t.Fatal(err)
	}
	// The handler relies on the API server having stopped serving v2, in its resource paths
	// and its discovery, before the next scale; wait for both.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, getErr := dyn.Resource(v2).Namespace(ns).Get(ctx, "g", metav1.GetOptions{})
		_, discErr := kube.Discovery().ServerResourcesForGroupVersion(v2.GroupVersion().String())
		if apierrors.IsNotFound(getErr) && apierrors.IsNotFound(discErr) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("v2 still served 30s after the CRD stopped serving it: get %v, discovery %v", getErr, discErr)
		}
		time.Sleep(100 * time.Millisecond)
	}

	result, err = handler.ScaleUp(ctx, target, 2)
	if err != nil {
		t.Fatalf("the scale after v2 went away failed: %v (reason %s)", err, scaling.ReasonOf(err))
	}
	if result.Resource != v1 || !result.Scaled || result.Replicas != 2 {
		t.Fatalf("result %+v, want v1 scaled to 2", result)
	}
}
