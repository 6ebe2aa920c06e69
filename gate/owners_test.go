package gate

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/wake"
)

type fakeOwners map[string]string // ownersKey -> refusal

func ownersKey(t wake.Target) string { return fmt.Sprintf("%s:%d", t, t.MinReplicas) }

func (f fakeOwners) Refusal(_ context.Context, t wake.Target) (string, error) {
	return f[ownersKey(t)], nil
}

// A target its owner has not opted in (or a name that is no workload at all) is refused before
// any write, on the held path and on the page path alike.
func TestOwnerRefusalComesBeforeAnyWrite(t *testing.T) {
	f := newFakeWaker()
	ghost := wake.Deployment("shop", "ghost")
	greedy := web
	greedy.MinReplicas = 3
	g := New(f, Config{Owners: fakeOwners{ownersKey(ghost): ReasonNotOptedIn, ownersKey(greedy): ReasonAboveOwnerCap}}, nil, logr.Discard())
	for _, tc := range []struct {
		target wake.Target
		page   bool
		reason string
	}{{ghost, false, ReasonNotOptedIn}, {ghost, true, ReasonNotOptedIn}, {greedy, false, ReasonAboveOwnerCap}} {
		r := route(time.Second, tc.target)
		r.Page = tc.page
		a := g.Check(context.Background(), r, "GET", "text/html")
		if a.Outcome != OutcomeRefused || a.Status() != 403 || a.Reason != tc.reason {
			t.Errorf("%s (page %v): %+v, want 403 %s", tc.target, tc.page, a, tc.reason)
		}
		if wakes, waits := f.counts(tc.target); wakes+waits != 0 {
			t.Errorf("%s: %d wakes, %d waits before the owner's refusal", tc.target, wakes, waits)
		}
	}
	if a := g.Check(context.Background(), route(time.Second, web), "GET", ""); a.Outcome == OutcomeRefused {
		t.Errorf("an opted-in target was refused: %+v", a)
	}
}

func deployment(name string, labels, annotations map[string]string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"namespace": "shop", "name": name},
		"spec":     map[string]any{"replicas": int64(0)},
	}}
	u.SetLabels(labels)
	u.SetAnnotations(annotations)
	return u
}

// InventoryOwners reads the owner's mark and cap from label-selected informers, with a default
// cap of 1 for workloads without the annotation.
func TestInventoryOwners(t *testing.T) {
	deployments := schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	optIn := map[string]string{v1alpha1.LabelWake: "true"}
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{deployments: "DeploymentList"},
		deployment("web", optIn, nil),
		deployment("big", optIn, map[string]string{v1alpha1.AnnotationMaxReplicas: "5"}),
		deployment("broken", optIn, map[string]string{v1alpha1.AnnotationMaxReplicas: "many"}),
		deployment("private", nil, nil))
	mapper := meta.NewDefaultRESTMapper(nil)
	mapper.Add(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, meta.RESTScopeNamespace)
	o := NewInventoryOwners(client, mapper, []string{"shop"}, DefaultMaxReplicas)
	defer o.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	target := func(name string, n int32) wake.Target {
		t := wake.Deployment("shop", name)
		t.MinReplicas = n
		return t
	}
	for _, tc := range []struct {
		t    wake.Target
		want string
	}{
		{target("web", 0), ""},
		{target("web", 1), ""},
		{target("web", 2), ReasonAboveOwnerCap},
		{target("big", 5), ""},
		{target("big", 6), ReasonAboveOwnerCap},
		{target("broken", 1), ReasonAboveOwnerCap},
		{target("private", 1), ReasonNotOptedIn},
		{target("nonexistent", 1), ReasonNotOptedIn},
		{wake.Target{Namespace: "shop", APIVersion: "example.com/v1", Kind: "Widget", Name: "w"}, v1alpha1.ReasonKindUnknown},
	} {
		got, err := o.Refusal(ctx, tc.t)
		if err != nil || got != tc.want {
			t.Errorf("Refusal(%s:%d) = %q, %v; want %q", tc.t, tc.t.MinReplicas, got, err, tc.want)
		}
	}
}

// A gate serving some namespaces writes in none other: the target is refused as not served,
// with no Wake.
func TestNamespacesNotServedGetNoWrite(t *testing.T) {
	f := newFakeWaker()
	g := New(NamespaceWakers{"shop": f}, Config{}, nil, logr.Discard())
	other := wake.Deployment("kube-system", "coredns")
	a := g.Check(context.Background(), route(time.Second, other), "GET", "")
	if a.Outcome.Passes() || a.Reason != "NamespaceNotServed" {
		t.Errorf("answer %+v, want NamespaceNotServed", a)
	}
	if wakes, _ := f.counts(other); wakes != 0 {
		t.Errorf("%d wakes in a namespace not served", wakes)
	}
}
