package scaling

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
)

const capAnnotation = "example.com/cap"

// marked is a Deployment as a cluster holds it: labels, annotations, a pod template and status
// conditions, most of which the inventory must not keep.
func marked(name string, labels map[string]string, replicas, ready int64) *unstructured.Unstructured {
	obj := deployment(1, 1, replicas, ready)
	obj.SetName(name)
	obj.SetLabels(labels)
	obj.SetAnnotations(map[string]string{capAnnotation: "3", "unrelated": "x"})
	obj.Object["spec"].(map[string]any)["template"] = map[string]any{"spec": map[string]any{"containers": []any{map[string]any{"name": "app", "image": "app:1"}}}}
	obj.Object["status"].(map[string]any)["conditions"] = []any{map[string]any{"type": "Available", "status": "True", "message": "Deployment has minimum availability."}}
	return obj
}

func TestInventoryKeepsOnlyWhatDecisionsRead(t *testing.T) {
	inv := &Inventory{annotations: []string{capAnnotation}}
	got, err := inv.trim(marked("web", nil, 2, 1))
	if err != nil {
		t.Fatal(err)
	}
	o, ok := got.(*inventoryObject)
	if !ok {
		t.Fatalf("trim returned %T", got)
	}
	if o.Namespace != "shop" || o.Name != "web" {
		t.Errorf("key %s/%s, want shop/web", o.Namespace, o.Name)
	}
	if want := (TargetState{Exists: true, Generation: 1, Replicas: 2, ReadyReplicas: 1, Current: true}); o.state != want {
		t.Errorf("state %+v, want %+v", o.state, want)
	}
	if len(o.Annotations) != 1 || o.Annotations[capAnnotation] != "3" {
		t.Errorf("annotations %v, want only %s", o.Annotations, capAnnotation)
	}
	if o.Labels != nil || o.ManagedFields != nil {
		t.Errorf("kept labels or managed fields: %+v", o.ObjectMeta)
	}
	again, err := inv.trim(o)
	if err != nil || again != any(o) {
		t.Errorf("trim of a trimmed object gave %v, %v; an informer may transform twice", again, err)
	}
	if c := o.DeepCopyObject().(*inventoryObject); c == o || c.state != o.state || c.Annotations[capAnnotation] != "3" {
		t.Errorf("DeepCopyObject: %+v", c)
	}
}

func TestInventoryFollowsMarkedWorkloads(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wake := map[string]string{"wake": "true"}
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{deploymentsV1: "DeploymentList"},
		marked("web", wake, 0, 0), marked("other", nil, 0, 0))
	type change struct{ namespace, name string }
	changes := make(chan change, 10)
	inv := NewInventory(client, nil, "wake=true", []string{capAnnotation}, func(_ schema.GroupKind, namespace, name string) {
		changes <- change{namespace, name}
	})
	defer inv.Stop()
	gk := schema.GroupKind{Group: "apps", Kind: "Deployment"}

	entry, found, err := inv.Lookup(ctx, gk, deploymentsV1, "shop", "web")
	if err != nil || !found || entry.State.Replicas != 0 || entry.Annotations[capAnnotation] != "3" {
		t.Fatalf("Lookup(web) = %+v, %v, %v; want the marked workload at 0 replicas with its cap", entry, found, err)
	}
	if _, found, err := inv.Lookup(ctx, gk, deploymentsV1, "shop", "other"); err != nil || found {
		t.Fatalf("Lookup(other) found=%v err=%v; an unmarked workload is not followed", found, err)
	}
	if c := <-changes; c != (change{"shop", "web"}) {
		t.Fatalf("first change %v, want the marked workload's addition", c)
	}

	if _, err := client.Resource(deploymentsV1).Namespace("shop").Update(ctx, marked("web", wake, 2, 2), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-changes:
		entry, _, _ := inv.Lookup(ctx, gk, deploymentsV1, "shop", "web")
		if c != (change{"shop", "web"}) || entry.State.Replicas != 2 || entry.State.ReadyReplicas != 2 {
			t.Fatalf("after scaling: change %v, entry %+v; want web at 2/2", c, entry.State)
		}
	case <-ctx.Done():
		t.Fatal("the change of replicas was not reported")
	}
}

func TestInventoryIgnoresChangesNoDecisionReads(t *testing.T) {
	inv := &Inventory{annotations: []string{capAnnotation}}
	trimmed := func(obj *unstructured.Unstructured) any {
		o, err := inv.trim(obj)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	before := marked("web", nil, 1, 1)
	conditionOnly := marked("web", nil, 1, 1)
	conditionOnly.Object["status"].(map[string]any)["conditions"] = []any{map[string]any{"type": "Available", "message": "changed"}}
	conditionOnly.SetAnnotations(map[string]string{capAnnotation: "3", "unrelated": "y"})
	if !sameDecisionInputs(trimmed(before), trimmed(conditionOnly)) {
		t.Error("a change of a condition and of an annotation not kept counts as a change")
	}
	capChanged := marked("web", nil, 1, 1)
	capChanged.SetAnnotations(map[string]string{capAnnotation: "5"})
	for name, after := range map[string]*unstructured.Unstructured{
		"replicas": marked("web", nil, 0, 1), "ready replicas": marked("web", nil, 1, 0), "cap": capChanged,
	} {
		if sameDecisionInputs(trimmed(before), trimmed(after)) {
			t.Errorf("a change of %s is not seen", name)
		}
	}
}
