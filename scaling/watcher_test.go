package scaling

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/klog/v2/ktesting"
)

func deployment(generation, observed, replicas, ready int64) *unstructured.Unstructured {
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": "web", "namespace": "shop", "generation": generation},
		"spec":     map[string]any{"replicas": replicas},
		"status":   map[string]any{"observedGeneration": observed, "readyReplicas": ready},
	}}
	return obj
}

func TestStateOf(t *testing.T) {
	for _, tc := range []struct {
		name  string
		obj   *unstructured.Unstructured
		min   int32
		ready bool
	}{
		{"ready", deployment(2, 2, 1, 1), 1, true},
		{"more ready than needed", deployment(2, 2, 3, 3), 2, true},
		{"not yet ready", deployment(2, 2, 1, 0), 1, false},
		{"ready count predates the scale", deployment(3, 2, 1, 1), 1, false},
		{"below minimum", deployment(2, 2, 1, 1), 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := StateOf(tc.obj).ReadyFor(tc.min); got != tc.ready {
				t.Fatalf("ReadyFor(%d) = %v for %+v", tc.min, got, StateOf(tc.obj))
			}
		})
	}
	noStatus := &unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"generation": int64(1)}, "spec": map[string]any{"replicas": int64(1)}}}
	if s := StateOf(noStatus); !s.Exists || !s.Current || s.ReadyFor(1) {
		t.Fatalf("kind without observedGeneration: %+v", s)
	}
	if (TargetState{}).ReadyFor(0) {
		t.Fatal("a missing target is never ready")
	}
}

func TestWatcherFollowsOneTarget(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	scheme := runtime.NewScheme()
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme,
		map[schema.GroupVersionResource]string{deploymentsV1: "DeploymentList"}, deployment(1, 1, 0, 0))
	notified := make(chan string, 10)
	w := NewWatcher(client, func(id string) { notified <- id })
	defer w.StopAll()

	w.Watch(ctx, "web", deploymentsV1, "shop", "web", "")
	expectState := func(want func(TargetState) bool) {
		t.Helper()
		for {
			select {
			case id := <-notified:
				if id != "web" {
					t.Fatalf("notified %q", id)
				}
				if s, ok := w.State("web"); ok && want(s) {
					return
				}
			case <-time.After(10 * time.Second):
				s, ok := w.State("web")
				t.Fatalf("state never matched; last %+v (seen %v)", s, ok)
			}
		}
	}
	expectState(func(s TargetState) bool { return s.Exists && s.Replicas == 0 })

	deployments := client.Resource(deploymentsV1).Namespace("shop")
	if _, err := deployments.Update(ctx, deployment(2, 2, 1, 1), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	expectState(func(s TargetState) bool { return s.ReadyFor(1) })

	if err := deployments.Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expectState(func(s TargetState) bool { return !s.Exists })

	w.Forget("web")
	if _, ok := w.State("web"); ok || w.Len() != 0 {
		t.Fatal("state kept after Forget")
	}
}

func TestWatcherReportsMissingTarget(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{deploymentsV1: "DeploymentList"})
	notified := make(chan string, 1)
	w := NewWatcher(client, func(id string) { notified <- id })
	defer w.StopAll()
	w.Watch(ctx, "web", deploymentsV1, "shop", "web", "")
	select {
	case <-notified:
	case <-time.After(10 * time.Second):
		t.Fatal("no notification for a target that does not exist")
	}
	if s, ok := w.State("web"); !ok || s.Exists {
		t.Fatalf("state %+v seen %v", s, ok)
	}
}

// A relist replaces what a watch saw: the target's current state, or its absence.
func TestTargetStoreRecordsWhatTheReflectorSees(t *testing.T) {
	var got []TargetState
	s := targetStore{record: func(state TargetState) { got = append(got, state) }}
	_ = s.Replace(nil, "1")
	_ = s.Add(deployment(1, 1, 0, 0))
	_ = s.Update(deployment(2, 2, 1, 1))
	_ = s.Delete(deployment(2, 2, 1, 1))
	_ = s.Replace([]any{deployment(3, 3, 2, 2)}, "9")
	want := []TargetState{
		{},
		{Exists: true, Generation: 1, Current: true},
		{Exists: true, Generation: 2, Replicas: 1, ReadyReplicas: 1, Current: true},
		{},
		{Exists: true, Generation: 3, Replicas: 2, ReadyReplicas: 2, Current: true},
	}
	if len(got) != len(want) {
		t.Fatalf("recorded %d states, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("state %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// workload builds an object of any kind from its generation, spec.replicas and status fields.
func workload(apiVersion, kind string, generation, replicas int64, status map[string]any) *unstructured.Unstructured {
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": apiVersion, "kind": kind,
		"metadata": map[string]any{"name": "web", "namespace": "shop", "generation": generation},
		"spec":     map[string]any{"replicas": replicas},
	}}
	if status != nil {
		obj.Object["status"] = status
	}
	return obj
}

// Case 8: the readiness rule for any /scale kind (see StateOf).
func TestReadinessRule(t *testing.T) {
	rollout := func(generation int64, status map[string]any) *unstructured.Unstructured {
		return workload("argoproj.io/v1alpha1", "Rollout", generation, 2, status)
	}
	widget := func(generation int64, status map[string]any) *unstructured.Unstructured {
		return workload("example.com/v1", "Widget", generation, 2, status)
	}
	for _, tc := range []struct {
		name  string
		obj   *unstructured.Unstructured
		ready bool
	}{
		{"rollout, string observedGeneration behind", rollout(3, map[string]any{"observedGeneration": "2", "readyReplicas": int64(2)}), false},
		{"rollout, string observedGeneration current", rollout(3, map[string]any{"observedGeneration": "3", "readyReplicas": int64(2)}), true},
		{"rollout, too few ready", rollout(3, map[string]any{"observedGeneration": "3", "readyReplicas": int64(1), "replicas": int64(2)}), false},
		{"rollout, zero ready omitted", rollout(3, map[string]any{"observedGeneration": "3", "replicas": int64(2), "availableReplicas": int64(2)}), false},
		{"observedGeneration a hash: cannot compare, treated as absent", rollout(3, map[string]any{"observedGeneration": "5b9c9f8d7", "readyReplicas": int64(2)}), true},
		{"deployment, zero ready omitted while replicas start", workload("apps/v1", "Deployment", 2, 2, map[string]any{"observedGeneration": int64(2), "replicas": int64(2), "updatedReplicas": int64(2)}), false},
		{"kind with readyReplicas", widget(2, map[string]any{"observedGeneration": int64(2), "readyReplicas": int64(2), "replicas": int64(2)}), true},
		{"kind with readyReplicas short of replicas", widget(2, map[string]any{"observedGeneration": int64(2), "readyReplicas": int64(0), "replicas": int64(2)}), false},
		{"kind with availableReplicas only", widget(2, map[string]any{"observedGeneration": int64(2), "availableReplicas": int64(2), "replicas": int64(2)}), true},
		{"kind with availableReplicas short", widget(2, map[string]any{"observedGeneration": int64(2), "availableReplicas": int64(1), "replicas": int64(2)}), false},
		{"kind with status.replicas only", widget(2, map[string]any{"observedGeneration": int64(2), "replicas": int64(2)}), true},
		{"kind with status.replicas only, string observedGeneration", widget(2, map[string]any{"observedGeneration": "2", "replicas": int64(2)}), true},
		{"kind with status.replicas only, stale", widget(2, map[string]any{"observedGeneration": int64(1), "replicas": int64(2)}), false},
		{"kind with status.replicas only, stale string", widget(2, map[string]any{"observedGeneration": "1", "replicas": int64(2)}), false},
		{"kind with status.replicas short", widget(2, map[string]any{"replicas": int64(1)}), false},
		{"kind with no status", widget(2, nil), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := StateOf(tc.obj)
			if got := s.ReadyFor(2); got != tc.ready {
				t.Fatalf("ReadyFor(2) = %v, want %v; state %+v", got, tc.ready, s)
			}
			if s.Generation != tc.obj.GetGeneration() {
				t.Fatalf("Generation %d, want %d", s.Generation, tc.obj.GetGeneration())
			}
		})
	}
}
