package gate

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/wake"
)

// Outcome is how the gate answered one call. Its names are the values of the answers metric's
// outcome label, so the set is fixed.
type Outcome uint8

const (
	// OutcomeAwake: every target was ready; answered from the informer with no API call.
	OutcomeAwake Outcome = iota
	// OutcomeWoken: held until every target became ready, then let through.
	OutcomeWoken
	// OutcomePage: a browser got the "starting up" page at once; the targets are being woken.
	OutcomePage
	// OutcomeRefused: a target's owner has not allowed waking it (or not this far).
	OutcomeRefused
	// OutcomeTimeout: not ready within the route's timeout; 503 with Retry-After.
	OutcomeTimeout
	// OutcomeFailed: the controller gave up on a target (or the signal could not be written).
	OutcomeFailed
	// OutcomeOverflow: too many requests already held for a target.
	OutcomeOverflow
	// OutcomeBadRoute: the proxy's route configuration is malformed.
	OutcomeBadRoute
	// OutcomeUnavailable: the gate is starting or stopping.
	OutcomeUnavailable
	// OutcomeCanceled: the proxy gave up on the call while it was held.
	OutcomeCanceled
	// OutcomeUnauthorized: the call did not carry the gate's token (see Config.AuthToken).
	OutcomeUnauthorized
)

var outcomeNames = [...]string{"awake", "woken", "page", "refused", "timeout", "failed", "overflow", "bad_route", "unavailable", "canceled", "unauthorized"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// Passes reports whether the proxy should let the request through.
func (o Outcome) Passes() bool { return o == OutcomeAwake || o == OutcomeWoken }

// Answer is the gate's reply to one forward-auth call, before it is written as HTTP.
type Answer struct {
	Outcome Outcome
	// RetryAfter, when positive, is sent as Retry-After (and is the page's refresh interval).
	RetryAfter time.Duration
	// Reason is a ScaleRequest condition reason or a short cause, sent as X-Zerowake-Reason.
	Reason string
	// Message says in a sentence what happened and, when someone must act, what to do.
	Message string
	// Targets names the route's targets, for the page.
	Targets string
}

// Status is the HTTP status an answer is sent with. Every proxy lets 2xx through (Envoy only
// 200) and returns the others to the client.
func (a Answer) Status() int {
	switch a.Outcome {
	case OutcomeAwake, OutcomeWoken:
		return http.StatusOK
	case OutcomeRefused:
		return http.StatusForbidden
	case OutcomeBadRoute:
		return http.StatusBadRequest
	case OutcomeUnauthorized:
		return http.StatusUnauthorized
	case OutcomeCanceled:
		return 499 // never seen by anyone: the proxy has gone; logged as nginx does
	}
	return http.StatusServiceUnavailable
}

// Reasons with which the controller refuses a target whose owner has not allowed the wake: the
// workload is not labelled zerowake.dev/wake=true, or the request asks for more replicas than
// its zerowake.dev/max-replicas annotation allows.
const (
	ReasonNotOptedIn    = "NotOptedIn"
	ReasonAboveOwnerCap = "AboveOwnerCap"
)

// OptInLabel and MaxReplicasAnnotation are how a workload's owner allows waking it.
const (
	OptInLabel            = "zerowake.dev/wake"
	MaxReplicasAnnotation = "zerowake.dev/max-replicas"
)

// allReady reports whether every target's latest signal is Ready as the informer shows it. The
// controller keeps Ready truthful (a target set back to zero stops being Ready), so a gate may
// let the request through on this alone.
func allReady(statuses []wake.Status) bool {
	for i := range statuses {
		if !statuses[i].Ready {
			return false
		}
	}
	return len(statuses) > 0
}

// wantsPage reports whether a call is for a browser's page load that should get the "starting
// up" page rather than be held: the route allows it, the original request is a GET (or HEAD)
// and it accepts HTML. API clients and fetch() calls are held instead.
func wantsPage(route *Route, method, accept string) bool {
	if !route.Page || (method != http.MethodGet && method != http.MethodHead) {
		return false
	}
	return strings.Contains(accept, "text/html")
}

// overCap reports whether one more held request would exceed the per-target cap (0: no cap).
func overCap(held, limit int) bool { return limit > 0 && held >= limit }

// refusal reports whether a failure is the owner's (or the operator's) policy saying no, which
// waiting or retrying cannot change: answered 403, never held.
func refusal(reason string) bool {
	switch reason {
	case ReasonNotOptedIn, ReasonAboveOwnerCap, v1alpha1.ReasonKindNotAllowed:
		return true
	}
	return false
}

// answerFor turns the outcome of waking and waiting for target into an answer. err is nil when
// the target is ready; routeCtxErr is the route timeout's context error, which tells a timeout
// from the proxy hanging up (the caller's own context).
func answerFor(target wake.Target, err error, routeCtxErr, callerCtxErr error, route *Route, retryAfter time.Duration) Answer {
	a := Answer{RetryAfter: retryAfter}
	var failed *wake.FailedError
	var mismatch *wake.MismatchError
	switch {
	case err == nil:
		a.Outcome = OutcomeWoken
		a.RetryAfter = 0
	case errors.As(err, &failed) && refusal(failed.Reason):
		a.Outcome, a.Reason, a.RetryAfter = OutcomeRefused, failed.Reason, 0
		a.Message = refusalMessage(target, failed)
	case errors.As(err, &failed):
		a.Outcome, a.Reason = OutcomeFailed, failed.Reason
		a.Message = fmt.Sprintf("%s cannot be woken: %s", describe(target), failed.Error())
	case errors.As(err, &mismatch):
		a.Outcome, a.Reason = OutcomeFailed, "Mismatch"
		a.Message = mismatch.Error()
	case errors.Is(err, wake.ErrInvalidTarget):
		a.Outcome, a.Reason, a.RetryAfter = OutcomeBadRoute, "InvalidTarget", 0
		a.Message = err.Error()
	case errors.Is(err, wake.ErrNamespaceNotWatched):
		a.Outcome, a.Reason, a.RetryAfter = OutcomeBadRoute, "NamespaceNotServed", 0
		a.Message = fmt.Sprintf("this gate does not serve namespace %s (see its --namespaces flag)", target.Namespace)
	case errors.Is(err, wake.ErrStopped), errors.Is(err, wake.ErrNotStarted):
		a.Outcome, a.Reason = OutcomeUnavailable, "GateStopping"
		a.Message = "the gate is restarting; retry"
	case callerCtxErr != nil:
		a.Outcome, a.Reason, a.RetryAfter = OutcomeCanceled, "Canceled", 0
		a.Message = "the proxy ended the call"
	case routeCtxErr != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)):
		// The route's timeout passed (or, in a group, another target's failure ended the wait:
		// worst ranks that failure above this).
		a.Outcome, a.Reason = OutcomeTimeout, "NotReadyYet"
		a.Message = fmt.Sprintf("%s is starting and was not ready within %s; retry shortly", describe(target), route.Timeout)
	default:
		// The signal could not be written (the API server refused or is unreachable).
		a.Outcome, a.Reason = OutcomeFailed, "SignalFailed"
		a.Message = fmt.Sprintf("could not signal %s: %v", describe(target), err)
	}
	return a
}

// refusalMessage says who must act, and how, for a refused target.
func refusalMessage(t wake.Target, f *wake.FailedError) string {
	switch f.Reason {
	case ReasonNotOptedIn:
		return fmt.Sprintf("%s is not woken on request: its owner has not opted in. To allow it: kubectl label %s %s -n %s %s=true",
			describe(t), strings.ToLower(t.Kind), t.Name, t.Namespace, OptInLabel)
	case ReasonAboveOwnerCap:
		return fmt.Sprintf("%s: this route asks for more replicas than its owner allows (annotation %s). Lower the route's replicas or raise the annotation. %s",
			describe(t), MaxReplicasAnnotation, f.Message)
	}
	return fmt.Sprintf("%s is not woken on request: %s", describe(t), f.Error())
}

// ownerRefusalMessage says, for operators, why the gate refused t before any write.
func ownerRefusalMessage(t wake.Target, reason string) string {
	switch reason {
	case ReasonNotOptedIn:
		return fmt.Sprintf("%s is not woken on request: no such workload in this gate's namespaces, or its owner has not opted in. To allow it: kubectl label %s %s -n %s %s=true",
			describe(t), strings.ToLower(t.Kind), t.Name, t.Namespace, OptInLabel)
	case ReasonAboveOwnerCap:
		return fmt.Sprintf("%s: this route asks for %d replicas, more than its owner allows (annotation %s; without it the gate's --default-max-replicas)",
			describe(t), max(t.MinReplicas, 1), MaxReplicasAnnotation)
	}
	return fmt.Sprintf("%s is not woken on request: %s", describe(t), reason)
}

// describe names a target for people: "Deployment shop/web".
func describe(t wake.Target) string { return t.Kind + " " + t.Namespace + "/" + t.Name }

// describeAll names a route's targets for people.
func describeAll(ts []wake.Target) string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = describe(t)
	}
	return strings.Join(names, ", ")
}

// worst picks the answer a group gets from its targets' answers: a refusal or a failure
// explains more than a timeout, and one target not ready holds back the whole group.
func worst(answers []Answer) Answer {
	rank := func(o Outcome) int {
		switch o {
		case OutcomeWoken, OutcomeAwake:
			return 0
		case OutcomeCanceled:
			return 1
		case OutcomeTimeout:
			return 2
		case OutcomeUnavailable:
			return 3
		case OutcomeFailed:
			return 4
		case OutcomeBadRoute:
			return 5
		case OutcomeRefused:
			return 6
		}
		return 1
	}
	best := answers[0]
	for _, a := range answers[1:] {
		if rank(a.Outcome) > rank(best.Outcome) {
			best = a
		}
	}
	return best
}
