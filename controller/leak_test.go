package controller

import (
	"runtime"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/tools/cache"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/scaling"
)

// TestNoWatchOutlivesItsRequest runs the real target watcher: whatever way a request ends
// (Ready, deleted, its target gone), its watch and the watch's goroutines end with it.
func TestNoWatchOutlivesItsRequest(t *testing.T) {
	baseline := runtime.NumGoroutine()
	deployment := func(name string, replicas, ready int64) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apps/v1", "kind": "Deployment",
			"metadata": map[string]any{"name": name, "namespace": "shop", "generation": int64(1)},
			"spec":     map[string]any{"replicas": replicas},
			"status":   map[string]any{"observedGeneration": int64(1), "readyReplicas": ready, "replicas": replicas},
		}}
		return u
	}
	scheme := k8sruntime.NewScheme()
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme,
		map[schema.GroupVersionResource]string{deployments: "DeploymentList"},
		deployment("web", 1, 0), deployment("api", 1, 0))

	ready := readyRequest()
	ready.Name = "ready"
	deleted := scaledRequest(t0)
	deleted.Name = "deleted"
	deleted.Spec.ScaleTargetRef.Name = "api"
	f := newFixture(t, DefaultAllowedKinds, ready, deleted)
	watcher := scaling.NewWatcher(dyn, f.ctrl.enqueueTarget)
	f.ctrl.watcher = watcher
	f.scaler.current = scaling.Result{Resource: deployments, Replicas: 1, PreviousReplicas: 1}

	// Both requests start following their targets (served before this process took over).
	for _, name := range []string{"ready", "deleted"} {
		sr := ready
		if name == "deleted" {
			sr = deleted
		}
		sr.Status.Phase = v1alpha1.PhaseScaling
		sr.Status.Conditions[1].Status, sr.Status.Conditions[1].Reason = metav1.ConditionFalse, v1alpha1.ReasonWaitingForReplicas
		if err := f.put(sr); err != nil {
			t.Fatal(err)
		}
		if err := f.ctrl.sync(f.ctx, cache.ObjectName{Namespace: "shop", Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	if watcher.Len() != 2 {
		t.Fatalf("%d targets watched, want 2", watcher.Len())
	}

	// One request becomes Ready, the other is deleted.
	if err := dyn.Tracker().Update(deployments, deployment("web", 1, 1), "shop"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the watch to see web ready", func() bool {
		s, ok := watcher.State("shop/apps/Deployment/web")
		return ok && s.ReadyReplicas == 1
	})
	if err := f.ctrl.sync(f.ctx, cache.ObjectName{Namespace: "shop", Name: "ready"}); err != nil {
		t.Fatal(err)
	}
	if err := f.remove(deleted); err != nil {
		t.Fatal(err)
	}
	if err := f.ctrl.sync(f.ctx, cache.ObjectName{Namespace: "shop", Name: "deleted"}); err != nil {
		t.Fatal(err)
	}
	if n := watcher.Len(); n != 0 || f.ctrl.Active() != 0 {
		t.Fatalf("%d watches and %d holds outlived their requests", n, f.ctrl.Active())
	}
	if n := f.ctrl.sightings.len(); n != 0 {
		t.Fatalf("%d signal sightings outlived their requests (settled or deleted)", n)
	}
	eventually(t, "the watches' goroutines to end", func() bool { return runtime.NumGoroutine() <= baseline+2 })
}

// eventually waits for cond, which reads state other goroutines update; bounded, not timed.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: never happened (%d goroutines)", what, runtime.NumGoroutine())
}
