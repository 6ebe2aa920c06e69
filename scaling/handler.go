package scaling

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/scale"
	"k8s.io/klog/v2"
)

// Result is what ScaleUp observed and did.
type Result struct {
	// Resource is the resource whose /scale served the target.
	Resource schema.GroupVersionResource
	// PreviousReplicas is the replica count found before any write.
	PreviousReplicas int32
	// Replicas is the replica count after ScaleUp: the minimum if it wrote, else what it found.
	Replicas int32
	// Scaled is true when ScaleUp wrote the replica count.
	Scaled bool
}

// ScaleHandler raises targets to a minimum replica count through /scale. It never lowers
// replicas: a target that already has the minimum belongs to whoever set it (an HPA, a person).
type ScaleHandler struct {
	scales     scale.ScalesGetter
	mapper     meta.ResettableRESTMapper
	scaleKinds scale.ScaleKindResolver

	mu sync.RWMutex
	// resolved remembers, per group and kind, the resource whose /scale serves it, so that the
	// wake path costs one request once a kind has been seen.
	resolved map[schema.GroupKind]schema.GroupVersionResource
}

// NewScaleHandler returns a handler that resolves kinds with mapper (reset when a kind is
// missing, so CRDs installed later are found) and checks /scale support with scaleKinds.
func NewScaleHandler(scales scale.ScalesGetter, mapper meta.ResettableRESTMapper, scaleKinds scale.ScaleKindResolver) *ScaleHandler {
	return &ScaleHandler{
		scales:     scales,
		mapper:     mapper,
		scaleKinds: scaleKinds,
		resolved:   map[schema.GroupKind]schema.GroupVersionResource{},
	}
}

// fromZeroPatch sets replicas only if the target has none: in autoscaling/v1 a Scale with zero
// replicas has an empty spec, so the test fails (422) for any other count. One request, no read,
// and no lost update if something else scaled the target in between.
func fromZeroPatch(minReplicas int32) []byte {
	return []byte(`[{"op":"test","path":"/spec","value":{}},{"op":"add","path":"/spec/replicas","value":` +
		strconv.FormatInt(int64(minReplicas), 10) + `}]`)
}

// ScaleUp makes sure the target has at least minReplicas replicas. From zero it costs one
// PATCH; otherwise a GET, and a PATCH guarded by the resourceVersion it read if still below.
func (h *ScaleHandler) ScaleUp(ctx context.Context, target Target, minReplicas int32) (Result, error) {
	gvr, err := h.Resolve(ctx, target)
	if err != nil {
		return Result{}, err
	}
	result := Result{Resource: gvr}
	scales := h.scales.Scales(target.Namespace)

	s, err := scales.Patch(ctx, gvr, target.Ref.Name, types.JSONPatchType, fromZeroPatch(minReplicas), metav1.PatchOptions{})
	if err == nil {
		result.PreviousReplicas, result.Replicas, result.Scaled = 0, s.Spec.Replicas, true
		return result, nil
	}
	if !isTestFailed(err) {
		return result, h.classify(target, gvr, err)
	}

	s, err = scales.Get(ctx, gvr.GroupResource(), target.Ref.Name, metav1.GetOptions{})
	if err != nil {
		return result, h.classify(target, gvr, err)
	}
	result.PreviousReplicas, result.Replicas = s.Spec.Replicas, s.Spec.Replicas
	if s.Spec.Replicas >= minReplicas {
		return result, nil
	}
	patch := fmt.Sprintf(`{"metadata":{"resourceVersion":%q},"spec":{"replicas":%d}}`, s.ResourceVersion, minReplicas)
	s, err = scales.Patch(ctx, gvr, target.Ref.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		return result, h.classify(target, gvr, err)
	}
	result.Replicas, result.Scaled = s.Spec.Replicas, true
	return result, nil
}

// Current reads the target's replica count without writing anything.
func (h *ScaleHandler) Current(ctx context.Context, target Target) (Result, error) {
	gvr, err := h.Resolve(ctx, target)
	if err != nil {
		return Result{}, err
	}
	s, err := h.scales.Scales(target.Namespace).Get(ctx, gvr.GroupResource(), target.Ref.Name, metav1.GetOptions{})
	if err != nil {
		return Result{Resource: gvr}, h.classify(target, gvr, err)
	}
	return Result{Resource: gvr, PreviousReplicas: s.Spec.Replicas, Replicas: s.Spec.Replicas}, nil
}

// isTestFailed reports whether a JSON patch was refused because its test operation failed.
func isTestFailed(err error) bool {
	status, ok := err.(apierrors.APIStatus)
	return ok && status.Status().Code == http.StatusUnprocessableEntity
}

// Resolve returns the resource whose /scale serves the target's kind: the first of the kind's
// REST mappings, in the API server's preference order, whose discovery lists a scale subresource.
func (h *ScaleHandler) Resolve(ctx context.Context, target Target) (schema.GroupVersionResource, error) {
	gk, err := target.GroupKind()
	if err != nil {
		return schema.GroupVersionResource{}, &Error{Reason: ReasonInvalidTarget, Target: target.String(), Err: err}
	}
	h.mu.RLock()
	gvr, ok := h.resolved[gk]
	h.mu.RUnlock()
	if ok {
		return gvr, nil
	}

	mappings, err := h.mapper.RESTMappings(gk)
	if meta.IsNoMatchError(err) {
		// A CRD may have been installed since discovery was cached.
		klog.FromContext(ctx).V(2).Info("Kind not in discovery cache, refreshing", "groupKind", gk)
		h.mapper.Reset()
		mappings, err = h.mapper.RESTMappings(gk)
	}
	if meta.IsNoMatchError(err) {
		return schema.GroupVersionResource{}, &Error{Reason: ReasonKindUnknown, Target: target.String(),
			Err: fmt.Errorf("the API server serves no kind %q", gk)}
	}
	if err != nil {
		return schema.GroupVersionResource{}, &Error{Reason: ReasonTransient, Target: target.String(), Err: err}
	}
	var lastErr error
	for _, mapping := range mappings {
		if _, err := h.scaleKinds.ScaleForResource(mapping.Resource); err != nil {
			lastErr = err
			continue
		}
		h.mu.Lock()
		h.resolved[gk] = mapping.Resource
		h.mu.Unlock()
		return mapping.Resource, nil
	}
	return schema.GroupVersionResource{}, &Error{Reason: ReasonNoScaleSubresource, Target: target.String(),
		Err: fmt.Errorf("kind %q has no /scale subresource: %v", gk, lastErr)}
}

// classify turns an API error into an *Error. A 404 that is about the resource rather than
// the object means the resource itself is gone (a CRD removed), so the cached resolution and
// discovery are dropped.
func (h *ScaleHandler) classify(target Target, gvr schema.GroupVersionResource, err error) error {
	reason := ReasonTransient
	switch {
	case apierrors.IsNotFound(err):
		reason = ReasonTargetNotFound
		if resourceMissing(err) {
			reason = ReasonKindUnknown
			h.forget(gvr)
		}
	case apierrors.IsForbidden(err):
		reason = ReasonForbidden
	case apierrors.IsConflict(err):
		reason = ReasonConflict
	}
	return &Error{Reason: reason, Target: target.String(), Err: err}
}

// resourceMissing reports whether a 404 says the resource is not served, rather than that the
// object does not exist. The apiserver answers for a missing object with a Status naming it; for
// a path it does not serve (a removed CRD's) with a bare "404 page not found", which client-go
// turns into a Status of its own with an UnexpectedServerResponse cause (and the requested
// name in its details).
func resourceMissing(err error) bool {
	status, ok := err.(apierrors.APIStatus)
	if !ok {
		return false
	}
	d := status.Status().Details
	if d == nil || d.Name == "" {
		return true
	}
	for _, cause := range d.Causes {
		if cause.Type == metav1.CauseTypeUnexpectedServerResponse {
			return true
		}
	}
	return false
}

// forget drops every cached resolution to gvr and resets discovery.
func (h *ScaleHandler) forget(gvr schema.GroupVersionResource) {
	h.mu.Lock()
	for gk, resolved := range h.resolved {
		if resolved == gvr {
			delete(h.resolved, gk)
		}
	}
	h.mu.Unlock()
	h.mapper.Reset()
}
