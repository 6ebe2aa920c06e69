package scaling

import (
	"errors"
	"fmt"
)

// Reason says why a scale failed, so callers can tell retryable failures from permanent ones
// without parsing messages.
type Reason string

const (
	// ReasonInvalidTarget: the reference itself is malformed (e.g. an unparsable apiVersion).
	ReasonInvalidTarget Reason = "InvalidTarget"
	// ReasonKindUnknown: the API server serves no resource for the target's group and kind.
	ReasonKindUnknown Reason = "KindUnknown"
	// ReasonNoScaleSubresource: the kind exists but none of its resources serves /scale.
	ReasonNoScaleSubresource Reason = "NoScaleSubresource"
	// ReasonTargetNotFound: the kind serves /scale but no object of that name exists.
	ReasonTargetNotFound Reason = "TargetNotFound"
	// ReasonForbidden: the API server's authorizer (RBAC) refused the caller the target's /scale.
	// Someone may grant it; a just-restarted API server also answers this until its authorizer's
	// cache is warm.
	ReasonForbidden Reason = "Forbidden"
	// ReasonRejected: the API server understood the request and refused it on its merits: a
	// validation error (400 BadRequest, 422 Invalid), or a denial by an admission webhook or a
	// ValidatingAdmissionPolicy (whatever code it chose). Err carries the API's message. Retrying
	// the same request does not help until someone changes the policy, webhook or target.
	ReasonRejected Reason = "Rejected"
	// ReasonConflict: the target changed between read and write; retrying is expected to succeed.
	ReasonConflict Reason = "Conflict"
	// ReasonTransient: anything else (timeouts, server errors, throttling, discovery that did not
	// answer); retry with backoff.
	ReasonTransient Reason = "Transient"
)

// Error is returned by ScaleHandler for every failure; Reason classifies it.
type Error struct {
	Reason Reason
	// Target is "Kind/name" (or "group/Kind/name") for messages.
	Target string
	Err    error

	// resourceGone marks a 404 for the resource itself (not the object), which ScaleHandler
	// answers by resolving the kind again once.
	resourceGone bool
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s: %v", e.Target, e.Reason, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the Reason of err, ReasonTransient for errors not produced by this package,
// and "" for nil.
func ReasonOf(err error) Reason {
	if err == nil {
		return ""
	}
	var se *Error
	if errors.As(err, &se) {
		return se.Reason
	}
	return ReasonTransient
}
