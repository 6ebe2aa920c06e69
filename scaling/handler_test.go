package scaling

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
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
		// The words of client-go's discovery resolver when discovery lists no scale subresource.
		return schema.GroupVersionKind{}, fmt.Errorf("could not find scale subresource for %s in discovery information", gvr)
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
	// patchErr, if set, is returned for every patch (an admission denial of writes only).
	patchErr error
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
		if f.patchErr != nil {
			return true, nil, f.patchErr
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
				return true, nil, testOpFailed()
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
	// The resourceVersion is the write's, so that a cache of the target can tell when it has
	// caught up with it.
	want := Result{Resource: deploymentsV1, PreviousReplicas: 0, Replicas: 2, Scaled: true, ResourceVersion: "2"}
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

// testOpFailed is the API server's answer when a JSON patch's test operation fails, as the
// patch handler builds it: the patch library's message is dropped, no object is named.
func testOpFailed() error {
	return apierrors.NewGenericServerResponse(http.StatusUnprocessableEntity, "", schema.GroupResource{}, "", "testing value /spec failed: test failed", 0, false)
}

// policyDenial is a ValidatingAdmissionPolicy's denial as the API server builds it
// (admission.NewForbidden with the policy's reason and code, the message repeated as a cause).
func policyDenial(code int32, reason metav1.StatusReason) error {
	message := "ValidatingAdmissionPolicy 'no-scale' with binding 'no-scale' denied request: frozen"
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: code, Reason: reason,
		Message: `deployments.apps "web" is forbidden: ` + message,
		Details: &metav1.StatusDetails{Group: "apps", Kind: "deployments", Name: "web",
			Causes: []metav1.StatusCause{{Message: message}}},
	}}
}

// webhookDenial is an admission webhook's denial with the code the webhook chose.
func webhookDenial(code int32) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: code,
		Message: `admission webhook "guard.example.com" denied the request: scaling is frozen`,
	}}
}

// rbacDenial is the authorizer's 403, in the words of the API server's Forbidden response.
func rbacDenial() error {
	return apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "deployments"}, "web",
		errors.New(`User "system:serviceaccount:zerowake-system:zerowake-controller" cannot patch resource "deployments/scale" in API group "apps" in the namespace "shop"`))
}

// Case 2: only the test operation's failure means "not at zero"; every other refusal is
// reported as such, with the API's message, whichever write it answered.
func TestScaleUpRefusals(t *testing.T) {
	invalid := apierrors.NewInvalid(schema.GroupKind{Group: "autoscaling", Kind: "Scale"}, "web",
		field.ErrorList{field.Invalid(field.NewPath("spec", "replicas"), 5000, "must be at most 100")})
	for _, tc := range []struct {
		name string
		err  error
		want Reason
	}{
		{"policy denial, default 422", policyDenial(http.StatusUnprocessableEntity, metav1.StatusReasonInvalid), ReasonRejected},
		{"policy denial with reason Forbidden", policyDenial(http.StatusForbidden, metav1.StatusReasonForbidden), ReasonRejected},
		{"webhook denial 400", webhookDenial(http.StatusBadRequest), ReasonRejected},
		{"webhook denial 403", webhookDenial(http.StatusForbidden), ReasonRejected},
		{"webhook denial 422", webhookDenial(http.StatusUnprocessableEntity), ReasonRejected},
		{"validation error", invalid, ReasonRejected},
		{"bad request", apierrors.NewBadRequest("json: cannot unmarshal"), ReasonRejected},
		{"rbac", rbacDenial(), ReasonForbidden},
	} {
		for _, replicas := range []int32{0, 1} {
			t.Run(fmt.Sprintf("%s, from %d", tc.name, replicas), func(t *testing.T) {
				_, ctx := ktesting.NewTestContext(t)
				f := newHandlerFixture(replicas)
				if replicas == 0 {
					f.target.patchErr = tc.err
				} else {
					// The from-zero patch fails its test; the refusal answers the guarded write.
					f.client.PrependReactor("patch", "deployments", func(action core.Action) (bool, runtime.Object, error) {
						if action.(core.PatchAction).GetPatchType() == types.MergePatchType {
							return true, nil, tc.err
						}
						return false, nil, nil
					})
				}
				_, err := f.handler.ScaleUp(ctx, webDeployment(), 2)
				if got := ReasonOf(err); got != tc.want {
					t.Fatalf("reason %q, want %q (err %v)", got, tc.want, err)
				}
				if !errors.Is(err, tc.err) {
					t.Fatalf("the API error is not carried: %v", err)
				}
				if replicas == 0 && len(f.client.Actions()) != 1 {
					t.Fatalf("a refused from-zero patch was read as a failed test: %v", f.client.Actions())
				}
			})
		}
	}
}

// The test operation's failure is recognised exactly as the API server sends it, and nothing
// that merely shares its code.
func TestIsTestFailed(t *testing.T) {
	if !isTestFailed(testOpFailed()) {
		t.Fatal("the test operation's failure not recognised")
	}
	// As decoded from the wire: empty details rather than none.
	wire := &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: 422,
		Reason: metav1.StatusReasonInvalid, Message: jsonPatchApplyFailed, Details: &metav1.StatusDetails{}}}
	if !isTestFailed(wire) || !isTestFailed(fmt.Errorf("wrapped: %w", wire)) {
		t.Fatal("the decoded test failure not recognised")
	}
	for _, err := range []error{
		policyDenial(422, metav1.StatusReasonInvalid),
		webhookDenial(422),
		apierrors.NewInvalid(schema.GroupKind{Kind: "Scale"}, "web", nil),
		apierrors.NewGenericServerResponse(http.StatusUnprocessableEntity, "patch", schema.GroupResource{Group: "apps", Resource: "deployments"}, "web", "", 0, false),
		apierrors.NewBadRequest(jsonPatchApplyFailed),
		errors.New(jsonPatchApplyFailed),
	} {
		if isTestFailed(err) {
			t.Errorf("read as the test's failure: %#v", err)
		}
	}
}

// flakyScaleKinds fails like client-go's discovery resolver does when discovery does not
// answer, for the resources in fail, and otherwise defers to scaleKinds.
type flakyScaleKinds struct {
	scaleKinds
	fail  map[schema.GroupVersionResource]bool
	calls int
}

func (s *flakyScaleKinds) ScaleForResource(gvr schema.GroupVersionResource) (schema.GroupVersionKind, error) {
	s.calls++
	if s.fail[gvr] {
		return schema.GroupVersionKind{}, fmt.Errorf("unable to fetch discovery information for %s: %w", gvr, apierrors.NewServiceUnavailable("etcd leader changed"))
	}
	return s.scaleKinds.ScaleForResource(gvr)
}

var (
	widgetsV1  = schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "widgets"}
	widgetsV2  = schema.GroupVersionResource{Group: "example.com", Version: "v2", Resource: "widgets"}
	widgetV1   = schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "Widget"}
	widgetV2   = schema.GroupVersionKind{Group: "example.com", Version: "v2", Kind: "Widget"}
	webWidget  = Target{Namespace: "shop", Ref: autoscalingv1.CrossVersionObjectReference{APIVersion: "example.com/v2", Kind: "Widget", Name: "web"}}
	removedErr = apierrors.NewGenericServerResponse(http.StatusNotFound, "patch", schema.GroupResource{Group: "example.com", Resource: "widgets"}, "web", "404 page not found", 0, true)
)

// Case 11: only discovery's definite answer that no version of a kind serves /scale is
// NoScaleSubresource; discovery that did not answer is Transient, and is asked afresh.
func TestResolveDiscoveryFailure(t *testing.T) {
	for _, tc := range []struct {
		name  string
		kinds scaleKinds
		fail  map[schema.GroupVersionResource]bool
		want  Reason
	}{
		{"discovery fails", scaleKinds{widgetsV1: true}, map[schema.GroupVersionResource]bool{widgetsV2: true, widgetsV1: true}, ReasonTransient},
		{"one version has no scale, the other's discovery fails", scaleKinds{}, map[schema.GroupVersionResource]bool{widgetsV1: true}, ReasonTransient},
		{"no version has scale", scaleKinds{}, nil, ReasonNoScaleSubresource},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			mapper := newMapper(widgetV2, widgetV1)
			kinds := &flakyScaleKinds{scaleKinds: tc.kinds, fail: tc.fail}
			h := NewScaleHandler(&fakescale.FakeScaleClient{}, mapper, kinds)
			_, err := h.Resolve(ctx, webWidget)
			if got := ReasonOf(err); got != tc.want {
				t.Fatalf("reason %q, want %q (err %v)", got, tc.want, err)
			}
			if tc.want == ReasonTransient && mapper.resets == 0 {
				t.Fatal("discovery not reset after it failed: the retry would read the cached failure")
			}
		})
	}

	// Once discovery answers again, the same handler resolves the kind.
	_, ctx := ktesting.NewTestContext(t)
	kinds := &flakyScaleKinds{scaleKinds: scaleKinds{widgetsV1: true}, fail: map[schema.GroupVersionResource]bool{widgetsV1: true}}
	h := NewScaleHandler(&fakescale.FakeScaleClient{}, newMapper(widgetV2, widgetV1), kinds)
	if _, err := h.Resolve(ctx, webWidget); ReasonOf(err) != ReasonTransient {
		t.Fatalf("want Transient, got %v", err)
	}
	kinds.fail = nil
	if gvr, err := h.Resolve(ctx, webWidget); err != nil || gvr != widgetsV1 {
		t.Fatalf("after discovery recovered: %v %v", gvr, err)
	}
}

// Case 11: a 404 for a cached resource (its CRD version removed) re-resolves the kind within
// the same call, and the scale goes to the version still served.
func TestRemovedVersionIsResolvedAgainAtOnce(t *testing.T) {
	for _, op := range []string{"ScaleUp", "Current"} {
		t.Run(op, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			mapper := newMapper(widgetV2, widgetV1)
			client := &fakescale.FakeScaleClient{}
			removed, getsRefused := false, 0
			react := func(action core.Action) (bool, runtime.Object, error) {
				if removed && action.GetResource().Version == "v2" {
					return true, nil, removedErr
				}
				// A Get names no version in the fake; the first after the removal is the stale one.
				if removed && action.GetVerb() == "get" && getsRefused == 0 {
					getsRefused++
					return true, nil, removedErr
				}
				if action.GetVerb() == "patch" {
					return true, &autoscalingv1.Scale{Spec: autoscalingv1.ScaleSpec{Replicas: 1}}, nil
				}
				return true, &autoscalingv1.Scale{Spec: autoscalingv1.ScaleSpec{Replicas: 0}}, nil
			}
			client.AddReactor("patch", "widgets", react)
			client.AddReactor("get", "widgets", react)
			h := NewScaleHandler(client, mapper, scaleKinds{widgetsV1: true, widgetsV2: true})
			call := func() (Result, error) {
				if op == "ScaleUp" {
					return h.ScaleUp(ctx, webWidget, 1)
				}
				return h.Current(ctx, webWidget)
			}
			if result, err := call(); err != nil || result.Resource != widgetsV2 {
				t.Fatalf("before the removal: %+v %v", result, err)
			}
			removed, mapper.afterReset = true, []schema.GroupVersionKind{widgetV1}
			result, err := call()
			if err != nil {
				t.Fatalf("the call after the removal failed: %v", err)
			}
			if result.Resource != widgetsV1 || mapper.resets == 0 {
				t.Fatalf("result %+v after %d resets", result, mapper.resets)
			}
		})
	}
}

// A kind removed altogether is still KindUnknown, after one re-resolution.
func TestRemovedKindIsUnknown(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	mapper := newMapper(widgetV2)
	client := &fakescale.FakeScaleClient{}
	patches := 0
	client.AddReactor("patch", "widgets", func(core.Action) (bool, runtime.Object, error) {
		patches++
		if patches > 1 {
			return true, nil, removedErr
		}
		return true, &autoscalingv1.Scale{Spec: autoscalingv1.ScaleSpec{Replicas: 1}}, nil
	})
	h := NewScaleHandler(client, mapper, scaleKinds{widgetsV2: true})
	if _, err := h.ScaleUp(ctx, webWidget, 1); err != nil {
		t.Fatal(err)
	}
	mapper.afterReset = []schema.GroupVersionKind{deploymentKind}
	if _, err := h.ScaleUp(ctx, webWidget, 1); ReasonOf(err) != ReasonKindUnknown {
		t.Fatalf("want KindUnknown, got %v", err)
	}
	if patches != 2 {
		t.Fatalf("%d patches, want 2: the removed kind must not be retried on a stale resolution", patches)
	}
}

// TestUnknownKindsRefreshDiscoveryAtMostOncePerInterval: with every kind allowed, requests for
// kinds the API server does not serve cost at most one discovery refresh per
// discoveryResetInterval between them, however many kinds they name and however often they are
// re-checked; a kind installed later is still found once the interval has passed.
func TestUnknownKindsRefreshDiscoveryAtMostOncePerInterval(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := newHandlerFixture(0, deploymentKind)
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	f.handler.now = func() time.Time { return now }
	unknown := func(i int) Target {
		return Target{Namespace: "shop", Ref: autoscalingv1.CrossVersionObjectReference{APIVersion: "example.com/v1", Kind: fmt.Sprintf("Unknown%d", i), Name: "web"}}
	}
	for i := range 100 {
		if _, err := f.handler.Resolve(ctx, unknown(i%10)); ReasonOf(err) != ReasonKindUnknown {
			t.Fatalf("unknown kind %d: %v, want KindUnknown", i, err)
		}
		now = now.Add(10 * time.Millisecond)
	}
	if f.mapper.resets != 1 {
		t.Fatalf("100 lookups of unknown kinds within %s refreshed discovery %d times, want 1", discoveryResetInterval, f.mapper.resets)
	}

	f.mapper.afterReset = []schema.GroupVersionKind{deploymentKind, rolloutKind}
	now = now.Add(discoveryResetInterval)
	rollout := Target{Namespace: "shop", Ref: autoscalingv1.CrossVersionObjectReference{APIVersion: "argoproj.io/v1alpha1", Kind: "Rollout", Name: "web"}}
	if gvr, err := f.handler.Resolve(ctx, rollout); err != nil || gvr.Resource != "rollouts" {
		t.Fatalf("a kind installed later, looked up %s after the last refresh: %v %v", discoveryResetInterval, gvr, err)
	}
	if f.mapper.resets != 2 {
		t.Fatalf("%d discovery refreshes, want 2", f.mapper.resets)
	}
}

// ScaleToZero lowers a target only as it was read: a target changed since (its resourceVersion
// moved) answers Conflict and keeps its replicas, and no write goes without a resourceVersion.
func TestScaleToZeroIsGuardedByTheVersionRead(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := newHandlerFixture(2)
	read, err := f.handler.Current(ctx, webDeployment())
	if err != nil {
		t.Fatal(err)
	}
	f.target.resourceVersion++ // someone scaled it meanwhile
	if _, err := f.handler.ScaleToZero(ctx, webDeployment(), read.ResourceVersion); ReasonOf(err) != ReasonConflict {
		t.Fatalf("scale to zero of a changed target: %v, want Conflict", err)
	}
	if f.target.replicas != 2 {
		t.Fatalf("replicas %d after a refused scale to zero, want 2", f.target.replicas)
	}
	read, err = f.handler.Current(ctx, webDeployment())
	if err != nil {
		t.Fatal(err)
	}
	result, err := f.handler.ScaleToZero(ctx, webDeployment(), read.ResourceVersion)
	if err != nil || f.target.replicas != 0 || !result.Scaled {
		t.Fatalf("scale to zero: %+v %v, replicas %d; want 0", result, err, f.target.replicas)
	}
	writes := f.writes()
	if last := writes[len(writes)-1]; last.GetPatchType() != types.MergePatchType {
		t.Errorf("patch type %s, want a merge patch carrying the resourceVersion", last.GetPatchType())
	}
	if _, err := f.handler.ScaleToZero(ctx, webDeployment(), ""); ReasonOf(err) != ReasonConflict {
		t.Errorf("scale to zero without a resourceVersion: %v, want Conflict (never unguarded)", err)
	}
}
