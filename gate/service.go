package gate

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/wake"
)

// ServiceRef names the Service a proxy sends a route's requests to. A route that names one
// passes only when the Service's EndpointSlices list at least MinReady ready endpoints, not
// merely when its targets report ready replicas: the proxy reaches the pods through those
// slices, which trail the workload's counters.
type ServiceRef struct {
	Namespace, Name string
	// MinReady is how many distinct ready endpoints the slices must list: the ":n" after the
	// Service's name, else the minReplicas of the route's target when it has exactly one, else 1.
	MinReady int
}

func (s ServiceRef) String() string { return s.Namespace + "/" + s.Name }

// describeService names a Service for people: "Service shop/web".
func describeService(s ServiceRef) string { return "Service " + s.String() }

// parseService reads the route's Service parameter, "namespace/name[:n]", given at most once.
// targets are the route's, for the default of MinReady.
func parseService(values []string, targets []wake.Target) (*ServiceRef, error) {
	var specs []string
	for _, list := range values {
		for _, s := range strings.Split(list, ",") {
			if s = strings.TrimSpace(s); s != "" {
				specs = append(specs, s)
			}
		}
	}
	switch len(specs) {
	case 0:
		return nil, nil
	case 1:
	default:
		return nil, fmt.Errorf("the route names %d services; a route names the one Service its proxy sends to", len(specs))
	}
	spec := specs[0]
	ref := ServiceRef{MinReady: 1}
	if len(targets) == 1 && targets[0].MinReplicas > 0 {
		ref.MinReady = int(targets[0].MinReplicas)
	}
	name := spec
	if i := strings.LastIndexByte(spec, ':'); i >= 0 {
		n, err := strconv.Atoi(spec[i+1:])
		if err != nil || n < 1 || n > v1alpha1.MaxMinReplicas {
			return nil, fmt.Errorf("service %q: ready endpoints after ':' must be 1..%d", spec, v1alpha1.MaxMinReplicas)
		}
		name, ref.MinReady = spec[:i], n
	}
	ns, svc, ok := strings.Cut(name, "/")
	if !ok || ns == "" || svc == "" || strings.Contains(svc, "/") {
		return nil, fmt.Errorf("service %q: want namespace/name", spec)
	}
	ref.Namespace, ref.Name = ns, svc
	return &ref, nil
}

// routable reports whether the route's Service lists enough ready endpoints now, as the
// Endpoints cache shows it (true for a route that names none: such a route is only as good as
// its targets' ready replicas). It returns an answer instead when the route cannot be served.
func (g *Gate) routable(route *Route) (bool, *Answer) {
	if route.Service == nil {
		return true, nil
	}
	if g.cfg.Endpoints == nil {
		return false, &Answer{Outcome: OutcomeBadRoute, Reason: "ServicesNotFollowed",
			Message: "the route names " + describeService(*route.Service) + ", but this gate does not follow Services' endpoints"}
	}
	count, err := g.cfg.Endpoints.Ready(*route.Service)
	if err != nil {
		a := routingAnswer(*route.Service, count, err, nil, nil, route.Timeout, g.cfg.RetryAfter)
		return false, &a
	}
	return count.Ready >= route.Service.MinReady, nil
}

// waitRoutable holds the call until the route's Service lists enough ready endpoints.
func (g *Gate) waitRoutable(ctx, callerCtx context.Context, route *Route) Answer {
	count, err := g.cfg.Endpoints.WaitReady(ctx, *route.Service)
	return routingAnswer(*route.Service, count, err, ctx.Err(), callerCtx.Err(), route.Timeout, g.cfg.RetryAfter)
}

// routingAnswer turns the outcome of waiting for a Service's endpoints into an answer, as
// answerFor does for a target. count is the last the wait saw.
func routingAnswer(s ServiceRef, count EndpointCount, err, routeCtxErr, callerCtxErr error, timeout, retryAfter time.Duration) Answer {
	a := Answer{RetryAfter: retryAfter}
	switch {
	case err == nil:
		a.Outcome, a.RetryAfter = OutcomeWoken, 0
	case errors.Is(err, wake.ErrNamespaceNotWatched):
		a.Outcome, a.Reason, a.RetryAfter = OutcomeBadRoute, "NamespaceNotServed", 0
		a.Message = fmt.Sprintf("this gate does not serve namespace %s, where the route's %s is (see its --namespaces flag)", s.Namespace, describeService(s))
	case errors.Is(err, ErrTooManyServices):
		a.Outcome, a.Reason = OutcomeFailed, "TooManyServices"
		a.Message = fmt.Sprintf("%s is not followed: %v", describeService(s), err)
	case errors.Is(err, wake.ErrStopped):
		a.Outcome, a.Reason = OutcomeUnavailable, "GateStopping"
		a.Message = "the gate is restarting; retry"
	case callerCtxErr != nil:
		a.Outcome, a.Reason, a.RetryAfter = OutcomeCanceled, "Canceled", 0
		a.Message = "the proxy ended the call"
	case routeCtxErr != nil:
		a.Outcome, a.Reason = OutcomeTimeout, "NotRoutableYet"
		a.Message = fmt.Sprintf("%s lists %d of the %d ready endpoints wanted after %s; retry shortly", describeService(s), count.Ready, s.MinReady, timeout)
		if count.Slices == 0 {
			a.Message += fmt.Sprintf(" (no EndpointSlice is labelled %s=%s: does the Service exist, and does its selector match the pods?)", discoveryv1.LabelServiceName, s.Name)
		}
	default:
		a.Outcome, a.Reason = OutcomeFailed, "EndpointsFailed"
		a.Message = fmt.Sprintf("could not follow %s: %v", describeService(s), err)
	}
	return a
}
