package scaling

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"testing"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	fakescale "k8s.io/client-go/scale/fake"
	core "k8s.io/client-go/testing"
	"k8s.io/klog/v2/ktesting"
)

var (
	deploymentsV1  = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	deploymentKind = schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
	configMapKind  = schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}
	rolloutKind    = schema.GroupVersionKind{Group: "argoproj.io", Version: "v1alpha1", Kind: "Rollout"}
)

// resettableMapper is a RESTMapper whose known kinds the test can change, standing in for
// discovery that learns about a CRD after a reset.
type resettableMapper struct {
	meta.RESTMapper
	afterReset []schema.GroupVersionKind
	resets     int
	lookups    int
}

func newMapper(kinds ...schema.GroupVersionKind) *resettableMapper {
	return &resettableMapper{RESTMapper: mapperFor(kinds...)}
}

func mapperFor(kinds ...schema.GroupVersionKind) meta.RESTMapper {
	var versions []schema.GroupVersion
	for _, k := range kinds {
		versions = append(versions, k.GroupVersion())
	}
	m := meta.NewDefaultRESTMapper(versions)
	for _, k := range kinds {
		m.Add(k, meta.RESTScopeNamespace)
	}
	return m
}

func (m *resettableMapper) RESTMappings(gk schema.GroupKind, versions ...string) ([]*meta.RESTMapping, error) {
	m.lookups++
	return m.RESTMapper.RESTMappings(gk, versions...)
}

func (m *resettableMapper) Reset() {
	m.resets++
	if m.afterReset != nil {
		m.RESTMapper = mapperFor(m.afterReset...)
	}
}

// scaleKinds says which resources serve /scale, as discovery would.
type scaleKinds map[schema.GroupVersionResource]bool

func (s scaleKinds) ScaleForResource(gvr schema.GroupVersionResource) (schema.GroupVersionKind, error) {
	if !s[gvr] {
		return schema.GroupVersionKind{}, errors.New("no scale subresource")
	}
	return autoscalingv1.SchemeGroupVersion.WithKind("Scale"), nil
}

// fakeTarget mimics the API server's /scale for one object: JSON patches with a test
// operation, merge patches with a resourceVersion precondition, and a Get.
type fakeTarget struct {
	replicas        int32
	resourceVersion int
	// failWith, if set, is returned for every request.
	failWith error
}

func (f *fakeTarget) scale() *autoscalingv1.Scale {
	return &autoscalingv1.Scale{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", ResourceVersion: strconv.Itoa(f.resourceVersion)},
		Spec:       autoscalingv1.ScaleSpec{Replicas: f.replicas},
	}
}

func (f *fakeTarget) install(client *fakescale.FakeScaleClient) {
	client.AddReactor("get", "deployments", func(core.Action) (bool, runtime.Object, error) {
		if f.failWith != nil {
			return true, nil, f.failWith
		}
		return true, f.scale(), nil
	})
	client.AddReactor("patch", "deployments", func(action core.Action) (bool, runtime.Object, error) {
		if f.failWith != nil {
			return true, nil, f.failWith
		}
		patch := action.(core.PatchAction)
		switch patch.GetPatchType() {
		case types.JSONPatchType:
			var ops []struct {
				Op    string          `json:"op"`
				Path  string          `json:"path"`
				Value json.RawMessage `json:"value"`
			}
			if err := json.Unmarshal(patch.GetPatch(), &ops); err != nil {
				return true, nil, apierrors.NewBadRequest(err.Error())
			}
			if len(ops) != 2 || ops[0].Op != "test" || ops[0].Path != "/spec" || string(ops[0].Value) != "{}" {
				return true, nil, apierrors.NewBadRequest("unexpected patch " + string(patch.GetPatch()))
			}
			if f.replicas != 0 {
				return true, nil, apierrors.NewGenericServerResponse(http.StatusUnprocessableEntity, "patch", schema.GroupResource{}, "", "testing value /spec failed", 0, false)
			}
			n, _ := strconv.Atoi(string(ops[1].Value))
			f.replicas = int32(n)
		case types.MergePatchType:
			var body struct {
				Metadata struct {
					ResourceVersion string `json:"resourceVersion"`
				} `json:"metadata"`
				Spec struct {
					Replicas int32 `json:"replicas"`
				} `json:"spec"`
			}
			if err := json.Unmarshal(patch.GetPatch(), &body); err != nil {
				return true, nil, apierrors.NewBadRequest(err.Error())
			}
			if body.Metadata.ResourceVersion != strconv.Itoa(f.resourceVersion) {
				return true, nil, apierrors.NewConflict(schema.GroupResource{Group: "apps", Resource: "deployments"}, "web", errors.New("object has been modified"))
			}
			f.replicas = body.Spec.Replicas
		default:
			return true, nil, apierrors.NewBadRequest("unsupported patch type")
		}
		f.resourceVersion++
		return true, f.scale(), nil
	})
}

type handlerFixture struct {
	handler *ScaleHandler
	client  *fakescale.FakeScaleClient
	mapper  *resettableMapper
	target  *fakeTarget
}

func newHandlerFixture(replicas int32, kinds ...schema.GroupVersionKind) *handlerFixture {
	if kinds == nil {
		kinds = []schema.GroupVersionKind{deploymentKind, configMapKind}
	}
	f := &handlerFixture{
		client: &fakescale.FakeScaleClient{},
		mapper: newMapper(kinds...),
		target: &fakeTarget{replicas: replicas, resourceVersion: 1},
	}
	f.target.install(f.client)
	f.handler = NewScaleHandler(f.client, f.mapper, scaleKinds{deploymentsV1: true,
		{Group: "argoproj.io", Version: "v1alpha1", Resource: "rollouts"}: true})
	return f
}

func webDeployment() Target {
	return Target{Namespace: "shop", Ref: autoscalingv1.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "web"}}
}

func (f *handlerFixture) writes() []core.PatchAction {
	var out []core.PatchAction
	for _, a := range f.client.Actions() {
		if p, ok := a.(core.PatchAction); ok {
			out = append(out, p)
		}
	}
	return out
}

func TestScaleUpFromZeroIsOnePatch(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := newHandlerFixture(0)
	result, err := f.handler.ScaleUp(ctx, webDeployment(), 2)
	if err != nil {
		t.Fatal(err)
	}
	want := Result{Resource: deploymentsV1, PreviousReplicas: 0, Replicas: 2, Scaled: true}
	if result != want {
		t.Fatalf("result %+v, want %+v", result, want)
	}
	if n := len(f.client.Actions()); n != 1 {
		t.Fatalf("scale from zero took %d requests, want 1: %v", n, f.client.Actions())
	}
	if f.target.replicas != 2 {
		t.Fatalf("target has %d replicas", f.target.replicas)
	}
}

func TestScaleUpLeavesHigherReplicasAlone(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := newHandlerFixture(5)
	result, err := f.handler.ScaleUp(ctx, webDeployment(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if result.Scaled || result.PreviousReplicas != 5 || result.Replicas != 5 {
		t.Fatalf("result %+v", result)
	}
	if f.target.replicas != 5 || len(f.writes()) != 1 {
		t.Fatalf("replicas %d after %d patches: only the refused test patch may be sent", f.target.replicas, len(f.writes()))
	}
}

func TestScaleUpRaisesFromBelowMinimum(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := newHandlerFixture(1)
	result, err := f.handler.ScaleUp(ctx, webDeployment(), 3)
	if err != nil {
		t.Fatal(err)
	}
	if !result.Scaled || result.PreviousReplicas != 1 || result.Replicas != 3 || f.target.replicas != 3 {
		t.Fatalf("result %+v, target %d", result, f.target.replicas)
	}
}

func TestCurrentReadsWithoutWriting(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := newHandlerFixture(4)
	result, err := f.handler.Current(ctx, webDeployment())
	if err != nil || result.Replicas != 4 || result.Scaled {
		t.Fatalf("result %+v err %v", result, err)
	}
	if len(f.writes()) != 0 {
		t.Fatal("Current wrote")
	}
}

func TestScaleUpErrors(t *testing.T) {
	gr := schema.GroupResource{Group: "apps", Resource: "deployments"}
	missingResource := apierrors.NewGenericServerResponse(http.StatusNotFound, "patch", schema.GroupResource{}, "", "the server could not find the requested resource", 0, false)
	// What client-go's scale client really returns for a resource the apiserver no longer
	// serves (a removed CRD): the server's plain-text 404, with the requested name filled in.
	removedCRD := apierrors.NewGenericServerResponse(http.StatusNotFound, "patch", schema.GroupResource{Resource: "widgets"}, "web", "404 page not found", 0, true)
	for _, tc := range []struct {
		name string
		err  error
		want Reason
	}{
		{"target not found", apierrors.NewNotFound(gr, "web"), ReasonTargetNotFound},
		{"resource gone", missingResource, ReasonKindUnknown},
		{"resource gone, as client-go reports it", removedCRD, ReasonKindUnknown},
		{"forbidden", apierrors.NewForbidden(gr, "web", errors.New("rbac")), ReasonForbidden},
		{"conflict", apierrors.NewConflict(gr, "web", errors.New("modified")), ReasonConflict},
		{"server error", apierrors.NewInternalError(errors.New("etcd")), ReasonTransient},
		{"throttled", apierrors.NewTooManyRequests("slow down", 1), ReasonTransient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			f := newHandlerFixture(0)
			f.target.failWith = tc.err
			_, err := f.handler.ScaleUp(ctx, webDeployment(), 1)
			if got := ReasonOf(err); got != tc.want {
				t.Fatalf("reason %q, want %q (err %v)", got, tc.want, err)
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("the API error is not wrapped: %v", err)
			}
		})
	}
}

func TestResourceGoneDropsResolution(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := newHandlerFixture(0)
	if _, err := f.handler.ScaleUp(ctx, webDeployment(), 1); err != nil {
		t.Fatal(err)
	}
	lookups := f.mapper.lookups
	f.target.failWith = apierrors.NewGenericServerResponse(http.StatusNotFound, "patch", schema.GroupResource{}, "", "not found", 0, false)
	if _, err := f.handler.ScaleUp(ctx, webDeployment(), 1); ReasonOf(err) != ReasonKindUnknown {
		t.Fatalf("want KindUnknown, got %v", err)
	}
	if f.mapper.resets == 0 {
		t.Fatal("discovery not reset after the resource disappeared")
	}
	f.target.failWith = nil
	if _, err := f.handler.ScaleUp(ctx, webDeployment(), 1); err != nil {
		t.Fatal(err)
	}
	if f.mapper.lookups == lookups {
		t.Fatal("kind not resolved again after its resource disappeared")
	}
}

func TestResolutionIsCached(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := newHandlerFixture(0)
	for range 3 {
		if _, err := f.handler.Resolve(ctx, webDeployment()); err != nil {
			t.Fatal(err)
		}
	}
	if f.mapper.lookups != 1 {
		t.Fatalf("%d RESTMapper lookups for one kind, want 1", f.mapper.lookups)
	}
}

func TestResolveFailures(t *testing.T) {
	for _, tc := range []struct {
		name string
		ref  autoscalingv1.CrossVersionObjectReference
		want Reason
	}{
		{"unknown kind", autoscalingv1.CrossVersionObjectReference{APIVersion: "example.com/v1", Kind: "Widget", Name: "web"}, ReasonKindUnknown},
		{"kind without scale", autoscalingv1.CrossVersionObjectReference{APIVersion: "v1", Kind: "ConfigMap", Name: "web"}, ReasonNoScaleSubresource},
		{"malformed apiVersion", autoscalingv1.CrossVersionObjectReference{APIVersion: "apps/v1/x", Kind: "Deployment", Name: "web"}, ReasonInvalidTarget},
		{"empty name", autoscalingv1.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment"}, ReasonInvalidTarget},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			f := newHandlerFixture(0)
			_, err := f.handler.ScaleUp(ctx, Target{Namespace: "shop", Ref: tc.ref}, 1)
			if got := ReasonOf(err); got != tc.want {
				t.Fatalf("reason %q, want %q (err %v)", got, tc.want, err)
			}
			if len(f.client.Actions()) != 0 {
				t.Fatal("a target that cannot resolve reached /scale")
			}
		})
	}
}

func TestNewCRDIsFoundAfterReset(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := newHandlerFixture(0, deploymentKind)
	f.mapper.afterReset = []schema.GroupVersionKind{deploymentKind, rolloutKind}
	f.client.AddReactor("patch", "rollouts", func(core.Action) (bool, runtime.Object, error) {
		return true, &autoscalingv1.Scale{Spec: autoscalingv1.ScaleSpec{Replicas: 1}}, nil
	})
	rollout := Target{Namespace: "shop", Ref: autoscalingv1.CrossVersionObjectReference{APIVersion: "argoproj.io/v1alpha1", Kind: "Rollout", Name: "web"}}
	result, err := f.handler.ScaleUp(ctx, rollout, 1)
	if err != nil {
		t.Fatalf("kind installed after start not found: %v", err)
	}
	if f.mapper.resets != 1 || result.Resource.Resource != "rollouts" {
		t.Fatalf("resets %d, result %+v", f.mapper.resets, result)
	}
}

func TestReasonOf(t *testing.T) {
	if ReasonOf(nil) != "" {
		t.Fatal("nil error has a reason")
	}
	if ReasonOf(errors.New("plain")) != ReasonTransient {
		t.Fatal("foreign errors must count as transient")
	}
	wrapped := errors.Join(errors.New("context"), &Error{Reason: ReasonForbidden, Err: errors.New("x")})
	if ReasonOf(wrapped) != ReasonForbidden {
		t.Fatal("wrapped reason lost")
	}
}
