package scaling

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/metadata"
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
	// ResourceVersion is the target's resourceVersion in the API server's last answer (after
	// the write, if one was made): a cache of the target reflects the write once it holds this
	// version or a later one.
	ResourceVersion string
}

// ScaleHandler raises targets to a minimum replica count through /scale. ScaleUp never lowers
// replicas: a target that already has the minimum belongs to whoever set it (an HPA, a person).
// Only ScaleToZero lowers them, and only as they were when its caller read them.
type ScaleHandler struct {
	scales     scale.ScalesGetter
	mapper     meta.ResettableRESTMapper
	scaleKinds scale.ScaleKindResolver

	mu sync.RWMutex
	// resolved remembers, per group and kind, the resource whose /scale serves it, so that the
	// wake path costs one request once a kind has been seen.
	resolved map[schema.GroupKind]schema.GroupVersionResource
	// records, if set, reads targets' metadata for LastWrite.
	records metadata.Interface
	// lastReset is when discovery was last refreshed.
	lastReset time.Time
	now       func() time.Time
}

// discoveryResetInterval is the least time between two discovery refreshes made because a
// request named a kind discovery did not list. Each refresh reads every API group's discovery
// document; with every kind allowed, requests naming kinds that do not exist would otherwise
// cost one each, again on every re-check. A CRD installed meanwhile is found by the first
// lookup of its kind after the interval (a request for it is re-checked within a rescale
// window, which is longer).
const discoveryResetInterval = 10 * time.Second

// NewScaleHandler returns a handler that resolves kinds with mapper (reset when a kind is
// missing, so CRDs installed later are found) and checks /scale support with scaleKinds.
func NewScaleHandler(scales scale.ScalesGetter, mapper meta.ResettableRESTMapper, scaleKinds scale.ScaleKindResolver) *ScaleHandler {
	return &ScaleHandler{
		scales:     scales,
		mapper:     mapper,
		scaleKinds: scaleKinds,
		resolved:   map[schema.GroupKind]schema.GroupVersionResource{},
		now:        time.Now,
	}
}

// fromZeroPatch sets replicas only if the target has none: in autoscaling/v1 a Scale with zero
// replicas has an empty spec, so the test fails for any other count. One request, no read,
// and no lost update if something else scaled the target in between.
func fromZeroPatch(minReplicas int32) []byte {
	return []byte(`[{"op":"test","path":"/spec","value":{}},{"op":"add","path":"/spec/replicas","value":` +
		strconv.FormatInt(int64(minReplicas), 10) + `}]`)
}

// ScaleUp makes sure the target has at least minReplicas replicas. From zero it costs one
// PATCH; otherwise a GET, and a PATCH guarded by the resourceVersion it read if still below.
func (h *ScaleHandler) ScaleUp(ctx context.Context, target Target, minReplicas int32) (Result, error) {
	return h.withResource(ctx, target, func(gvr schema.GroupVersionResource) (Result, error) {
		return h.scaleUp(ctx, target, gvr, minReplicas)
	})
}

func (h *ScaleHandler) scaleUp(ctx context.Context, target Target, gvr schema.GroupVersionResource, minReplicas int32) (Result, error) {
	result := Result{Resource: gvr}
	scales := h.scales.Scales(target.Namespace)

	// The field manager marks the write as one from zero in the target's managed fields, which
	// is how a successor recognises it if this process dies before recording it (LastWrite).
	s, err := scales.Patch(ctx, gvr, target.Ref.Name, types.JSONPatchType, fromZeroPatch(minReplicas), metav1.PatchOptions{FieldManager: FieldManager})
	if err == nil {
		result.PreviousReplicas, result.Replicas, result.Scaled, result.ResourceVersion = 0, s.Spec.Replicas, true, s.ResourceVersion
		return result, nil
	}
	if !isTestFailed(err) {
		return result, h.classify(target, gvr, err)
	}

	s, err = scales.Get(ctx, gvr.GroupResource(), target.Ref.Name, metav1.GetOptions{})
	if err != nil {
		return result, h.classify(target, gvr, err)
	}
	result.PreviousReplicas, result.Replicas, result.ResourceVersion = s.Spec.Replicas, s.Spec.Replicas, s.ResourceVersion
	if s.Spec.Replicas >= minReplicas {
		return result, nil
	}
	patch := fmt.Sprintf(`{"metadata":{"resourceVersion":%q},"spec":{"replicas":%d}}`, s.ResourceVersion, minReplicas)
	s, err = scales.Patch(ctx, gvr, target.Ref.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: raiseFieldManager})
	if err != nil {
		return result, h.classify(target, gvr, err)
	}
	result.Replicas, result.Scaled, result.ResourceVersion = s.Spec.Replicas, true, s.ResourceVersion
	return result, nil
}

// Current reads the target's replica count without writing anything.
func (h *ScaleHandler) Current(ctx context.Context, target Target) (Result, error) {
	return h.withResource(ctx, target, func(gvr schema.GroupVersionResource) (Result, error) {
		s, err := h.scales.Scales(target.Namespace).Get(ctx, gvr.GroupResource(), target.Ref.Name, metav1.GetOptions{})
		if err != nil {
			return Result{Resource: gvr}, h.classify(target, gvr, err)
		}
		return Result{Resource: gvr, PreviousReplicas: s.Spec.Replicas, Replicas: s.Spec.Replicas, ResourceVersion: s.ResourceVersion}, nil
	})
}

// withResource resolves the target and runs op on its resource. If the API server answers that
// the resource itself is gone (a CRD version removed since the resolution was cached), op runs
// once more on a fresh resolution: the kind may well be served by another version, and without
// this the caller would report KindUnknown until its next retry. A 404 for a resource sends no
// write, so running op again cannot write twice.
func (h *ScaleHandler) withResource(ctx context.Context, target Target, op func(schema.GroupVersionResource) (Result, error)) (Result, error) {
	var (
		result Result
		err    error
	)
	for attempt := 0; attempt < 2; attempt++ {
		var gvr schema.GroupVersionResource
		if gvr, err = h.Resolve(ctx, target); err != nil {
			return Result{}, err
		}
		result, err = op(gvr)
		var se *Error
		if !errors.As(err, &se) || !se.resourceGone {
			break
		}
		klog.FromContext(ctx).V(2).Info("Resource no longer served, resolving the kind again", "target", target.String(), "resource", gvr)
	}
	return result, err
}

// jsonPatchApplyFailed is the message client-go gives the API server's answer when a JSON patch
// cannot be applied. The server sends a 422 Invalid and drops the patch library's own message
// ("testing value /spec failed"), so this, with details naming no object and carrying no causes,
// is the whole of what the test operation's failure looks like on the wire.
const jsonPatchApplyFailed = "the server rejected our request due to an error in our request"

// isTestFailed reports whether the from-zero patch was refused because its test operation
// failed, i.e. the target is not at zero. Its other operation, an add of /spec/replicas to the
// empty spec the test just matched, cannot fail, so a failure to apply this patch is the test's.
// A 422 from validation or admission names the object or carries its own message, and is a
// refusal (ReasonRejected), not a sign of replicas above zero.
func isTestFailed(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	s := status.Status()
	if s.Code != http.StatusUnprocessableEntity || s.Reason != metav1.StatusReasonInvalid || s.Message != jsonPatchApplyFailed {
		return false
	}
	d := s.Details
	return d == nil || (d.Group == "" && d.Kind == "" && d.Name == "" && d.UID == "" && len(d.Causes) == 0)
}

// ErrNoScaleSubresource may be wrapped by a ScaleKindResolver's error to say, definitely, that a
// resource has no /scale; client-go's discovery resolver says it in words instead.
var ErrNoScaleSubresource = errors.New("no scale subresource")

// noScaleMessage starts the error of client-go's discovery ScaleKindResolver when discovery
// answered and listed no scale subresource for the resource. Every other error of that resolver
// is discovery not answering.
const noScaleMessage = "could not find scale subresource for "

// hasNoScale reports whether err from a ScaleKindResolver is a definite "no /scale", rather
// than a failure to find out.
func hasNoScale(err error) bool {
	return errors.Is(err, ErrNoScaleSubresource) || strings.HasPrefix(err.Error(), noScaleMessage)
}

// Resolve returns the resource whose /scale serves the target's kind: the first of the kind's
// REST mappings, in the API server's preference order, whose discovery lists a scale subresource.
//
// Only answers the API server gave are final: a kind it does not serve (KindUnknown) or whose
// every resource it lists without /scale (NoScaleSubresource). Discovery that fails to answer
// for any of the kind's versions is Transient, and discovery is reset so that the retry asks
// the API server again rather than a cached failure.
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
	if meta.IsNoMatchError(err) && h.mayRefresh() {
		// A CRD may have been installed since discovery was cached.
		klog.FromContext(ctx).V(2).Info("Kind not in discovery cache, refreshing", "groupKind", gk)
		h.resetDiscovery()
		mappings, err = h.mapper.RESTMappings(gk)
	}
	if meta.IsNoMatchError(err) {
		return schema.GroupVersionResource{}, &Error{Reason: ReasonKindUnknown, Target: target.String(),
			Err: fmt.Errorf("the API server serves no kind %q", gk)}
	}
	if err != nil {
		h.resetDiscovery()
		return schema.GroupVersionResource{}, &Error{Reason: ReasonTransient, Target: target.String(), Err: err}
	}
	var noScale, discoveryErr error
	for _, mapping := range mappings {
		_, err := h.scaleKinds.ScaleForResource(mapping.Resource)
		switch {
		case err == nil:
			h.mu.Lock()
			h.resolved[gk] = mapping.Resource
			h.mu.Unlock()
			return mapping.Resource, nil
		case hasNoScale(err):
			noScale = err
		default:
			discoveryErr = err
		}
	}
	if discoveryErr != nil || noScale == nil {
		// A version whose discovery failed may be the one that serves /scale. (No mappings at all
		// and no NoMatch error is not an answer either.)
		h.resetDiscovery()
		if discoveryErr == nil {
			discoveryErr = fmt.Errorf("no REST mapping for kind %q", gk)
		}
		return schema.GroupVersionResource{}, &Error{Reason: ReasonTransient, Target: target.String(),
			Err: fmt.Errorf("resolving kind %q: %w", gk, discoveryErr)}
	}
	return schema.GroupVersionResource{}, &Error{Reason: ReasonNoScaleSubresource, Target: target.String(),
		Err: fmt.Errorf("kind %q has no /scale subresource: %w", gk, noScale)}
}

// classify turns an API error into an *Error. A 404 that is about the resource rather than
// the object means the resource itself is gone (a CRD version removed), so the cached
// resolution and discovery are dropped and the error is marked for one re-resolution.
//
// A refusal is told apart from an RBAC denial by what the API server itself writes: admission
// webhooks' and ValidatingAdmissionPolicies' denials carry the server's own prefix (see
// isAdmissionDenial), whatever code they chose (400, 403, 422, ...). A 403 without it is the
// authorizer's. Other admission plugins could refuse with a bare 403, but none of the built-in
// ones acts on a /scale update, so such a 403 is reported as Forbidden.
func (h *ScaleHandler) classify(target Target, gvr schema.GroupVersionResource, err error) error {
	reason, gone := ReasonTransient, false
	switch {
	case apierrors.IsNotFound(err):
		reason = ReasonTargetNotFound
		if resourceMissing(err) {
			reason, gone = ReasonKindUnknown, true
			h.forget(gvr)
		}
	case apierrors.IsConflict(err):
		reason = ReasonConflict
	case isAdmissionDenial(err):
		reason = ReasonRejected
	case apierrors.IsForbidden(err):
		reason = ReasonForbidden
	case apierrors.IsBadRequest(err), apierrors.IsInvalid(err):
		reason = ReasonRejected
	}
	return &Error{Reason: reason, Target: target.String(), Err: err, resourceGone: gone}
}

// isAdmissionDenial reports whether err is a denial by an admission webhook or a
// ValidatingAdmissionPolicy. The API server prefixes their messages itself
// ("admission webhook %q denied the request", "ValidatingAdmissionPolicy '%s' [with binding
// '%s'] denied request"); there is no structured field that says so.
func isAdmissionDenial(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	s := status.Status()
	if s.Code < http.StatusBadRequest || s.Code >= http.StatusInternalServerError {
		return false
	}
	msg := s.Message
	return (strings.Contains(msg, "admission webhook \"") && strings.Contains(msg, " denied the request")) ||
		(strings.Contains(msg, "ValidatingAdmissionPolicy '") && strings.Contains(msg, " denied request"))
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
	h.resetDiscovery()
}

// mayRefresh reports whether a kind missing from discovery may refresh it: not within
// discoveryResetInterval of the last refresh, which would have listed a kind installed before it.
func (h *ScaleHandler) mayRefresh() bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.lastReset.IsZero() || h.now().Sub(h.lastReset) >= discoveryResetInterval
}

// resetDiscovery drops the cached discovery, so the next lookup asks the API server again.
func (h *ScaleHandler) resetDiscovery() {
	h.mu.Lock()
	h.lastReset = h.now()
	h.mu.Unlock()
	h.mapper.Reset()
}

// ScaleToZero sets the target's replicas to zero, only if its /scale still has resourceVersion
// (as read by Current when the caller decided): a target that anything changed since, a
// person, an autoscaler or a deploy, answers Conflict and is left as it is. This is the only
// write that lowers replicas; callers make it only for an owner who asked.
func (h *ScaleHandler) ScaleToZero(ctx context.Context, target Target, resourceVersion string) (Result, error) {
	return h.withResource(ctx, target, func(gvr schema.GroupVersionResource) (Result, error) {
		result := Result{Resource: gvr}
		if resourceVersion == "" {
			return result, &Error{Reason: ReasonConflict, Target: target.String(), Err: fmt.Errorf("no resourceVersion to guard the scale to zero")}
		}
		patch := fmt.Sprintf(`{"metadata":{"resourceVersion":%q},"spec":{"replicas":0}}`, resourceVersion)
		s, err := h.scales.Scales(target.Namespace).Patch(ctx, gvr, target.Ref.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: sleepFieldManager})
		if err != nil {
			return result, h.classify(target, gvr, err)
		}
		result.Replicas, result.Scaled, result.ResourceVersion = s.Spec.Replicas, true, s.ResourceVersion
		return result, nil
	})
}
