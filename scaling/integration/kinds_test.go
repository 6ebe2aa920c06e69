package integration

import (
	"path/filepath"
	"sync"
	"testing"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/zerowake/zerowake/hack/localcluster"
	"github.com/zerowake/zerowake/scaling"
)

var gadgets = schema.GroupVersionResource{Group: "scalingtest.zerowake.dev", Version: "v1", Resource: "gadgets"}

var installGadgets = sync.OnceValue(func() error {
	ctx, cancel := contextWithTimeout(time.Minute)
	defer cancel()
	manifest, err := filepath.Abs(filepath.Join("testdata", "gadgets.yaml"))
	if err != nil {
		return err
	}
	if _, err := cluster.Kubectl(ctx, "apply", "--server-side", "-f", manifest); err != nil {
		return err
	}
	_, err = cluster.Kubectl(ctx, "wait", "--for=condition=Established", "crd/gadgets.scalingtest.zerowake.dev", "--timeout=60s")
	return err
})

// TestReadinessRuleOnACustomKind follows a Gadget (a CRD with /scale, whose status the test
// writes) with scaling.Watcher through each branch of the readiness rule, with observedGeneration
// written as an integer and as a string, and scales it through ScaleHandler.
func TestReadinessRuleOnACustomKind(t *testing.T) {
	t.Parallel()
	if err := installGadgets(); err != nil {
		t.Fatal(err)
	}
	ns := localcluster.NewNamespace(t, cluster)
	ctx := testContext(t)
	dyn, err := dynamic.NewForConfig(cluster.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	client := dyn.Resource(gadgets).Namespace(ns)
	gadget := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "scalingtest.zerowake.dev/v1", "kind": "Gadget",
		"metadata": map[string]any{"name": "g"},
		"spec":     map[string]any{"replicas": int64(2)},
	}}
	if _, err := client.Create(ctx, gadget, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	notified := make(chan struct{}, 1)
	watcher := scaling.NewWatcher(dyn, func(string) {
		select {
		case notified <- struct{}{}:
		default:
		}
	})
	t.Cleanup(watcher.StopAll)
	watcher.Watch(ctx, "g", gadgets, ns, "g", "")

	setStatus := func(status map[string]any) {
		t.Helper()
		obj, err := client.Get(ctx, "g", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		obj.Object["status"] = status
		if _, err := client.UpdateStatus(ctx, obj, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// expect waits until the watcher reports want (each step's state differs from the one
	// before, so seeing it means the watch delivered the write) and checks readiness for min.
	expect := func(step string, want scaling.TargetState, min int32, ready bool) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			state, seen := watcher.State("g")
			got := state
			got.Generation = 0 // checked on its own below
			if seen && got == want {
				if state.ReadyFor(min) != ready {
					t.Fatalf("%s: ReadyFor(%d) = %v, want %v (state %+v)", step, min, !ready, ready, state)
				}
				return
			}
			select {
			case <-notified:
			case <-time.After(100 * time.Millisecond):
			case <-deadline:
				t.Fatalf("%s: the watcher never reported %+v; last %+v (seen %v)", step, want, state, seen)
			}
		}
	}
	state := func(replicas, ready int32, current bool) scaling.TargetState {
		return scaling.TargetState{Exists: true, Replicas: replicas, ReadyReplicas: ready, Current: current}
	}

	expect("no status", state(2, 0, true), 2, false)

	setStatus(map[string]any{"replicas": int64(2), "observedGeneration": "0"})
	expect("status.replicas only, string observedGeneration behind", state(2, 2, false), 2, false)

	setStatus(map[string]any{"replicas": int64(2), "observedGeneration": "1"})
	expect("status.replicas only, string observedGeneration current", state(2, 2, true), 2, true)

	setStatus(map[string]any{"replicas": int64(2), "readyReplicas": int64(1), "observedGeneration": int64(1)})
	expect("readyReplicas short of the minimum", state(2, 1, true), 2, false)

	setStatus(map[string]any{"replicas": int64(2), "readyReplicas": int64(2), "observedGeneration": int64(1)})
	expect("readyReplicas at the minimum", state(2, 2, true), 2, true)

	// A scale through /scale moves metadata.generation; the old status must not count.
	handler, _, _ := newHandler(t, cluster.RESTConfig())
	result, err := handler.ScaleUp(ctx, scaling.Target{Namespace: ns, Ref: autoscalingv1.CrossVersionObjectReference{
		APIVersion: "scalingtest.zerowake.dev/v1", Kind: "Gadget", Name: "g"}}, 3)
	if err != nil || !result.Scaled || result.PreviousReplicas != 2 || result.Resource != gadgets {
		t.Fatalf("scaling the gadget: %+v %v", result, err)
	}
	expect("integer observedGeneration behind the scale", state(3, 2, false), 2, false)

	setStatus(map[string]any{"replicas": int64(3), "availableReplicas": int64(1), "observedGeneration": int64(2)})
	expect("availableReplicas short", state(3, 1, true), 2, false)

	setStatus(map[string]any{"replicas": int64(3), "availableReplicas": int64(3), "observedGeneration": "2"})
	expect("availableReplicas, string observedGeneration current", state(3, 3, true), 3, true)

	if s, _ := watcher.State("g"); s.Generation != 2 {
		t.Fatalf("Generation %d, want 2 (metadata.generation after one scale)", s.Generation)
	}
}
