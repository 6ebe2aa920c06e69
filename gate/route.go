package gate

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/wake"
)

// Route is what one proxy route asks of the gate: the targets that must be up before its
// requests go through, and how long a request may be held for them.
type Route struct {
	// Targets are woken together; a request passes when every one of them is ready.
	Targets []wake.Target
	// Timeout is how long a request is held before it gets 503 with Retry-After.
	Timeout time.Duration
	// Page answers browsers at once with a self-refreshing "starting up" page instead of
	// holding them.
	Page bool
	// Service, when set, is the Service the proxy sends the route's requests to: they pass
	// only once its EndpointSlices list enough ready endpoints (see ServiceRef).
	Service *ServiceRef
}

// RouteDefaults fill in what a route leaves out and bound what it may ask for.
type RouteDefaults struct {
	Timeout    time.Duration
	MaxTimeout time.Duration
	Page       bool
	MaxTargets int
}

// Where a route's parameters come from. A proxy that copies the client's headers into its
// forward-auth call (nginx, Traefik, Caddy) must name targets in the URL it calls, which the
// client cannot change; Envoy appends the client's path and query to its call, so it names
// targets in headers it adds itself (and forwards only the client headers it is told to).
const (
	fromQuery  = iota // GET /auth?target=…
	fromHeader        // /ext_authz/<client path>, X-Zerowake-Target: …
)

// Route parameters, in the URL (query mode) or as headers (header mode).
const (
	paramTarget  = "target"
	paramTimeout = "timeout"
	paramPage    = "page"
	paramService = "service"

	HeaderTarget  = "X-Zerowake-Target"
	HeaderTimeout = "X-Zerowake-Timeout"
	HeaderPage    = "X-Zerowake-Page"
	HeaderService = "X-Zerowake-Service"
)

// parseRoute reads a route from the query or from the headers, never a mix of both (see
// fromQuery and fromHeader).
func parseRoute(mode int, query url.Values, header http.Header, d RouteDefaults) (Route, error) {
	var targets, services []string
	var timeout, page string
	if mode == fromQuery {
		targets, services = query[paramTarget], query[paramService]
		timeout, page = query.Get(paramTimeout), query.Get(paramPage)
	} else {
		targets, services = header.Values(HeaderTarget), header.Values(HeaderService)
		timeout, page = header.Get(HeaderTimeout), header.Get(HeaderPage)
	}
	r := Route{Timeout: d.Timeout, Page: d.Page}
	for _, list := range targets {
		for _, s := range strings.Split(list, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			t, err := ParseTarget(s)
			if err != nil {
				return Route{}, err
			}
			r.Targets = append(r.Targets, t)
		}
	}
	switch {
	case len(r.Targets) == 0:
		return Route{}, errors.New("the route names no target (want target=namespace/kind/name)")
	case d.MaxTargets > 0 && len(r.Targets) > d.MaxTargets:
		return Route{}, fmt.Errorf("the route names %d targets, at most %d are allowed", len(r.Targets), d.MaxTargets)
	}
	service, err := parseService(services, r.Targets)
	if err != nil {
		return Route{}, err
	}
	r.Service = service
	if timeout != "" {
		t, err := time.ParseDuration(timeout)
		if err != nil || t <= 0 {
			return Route{}, fmt.Errorf("timeout %q: want a positive duration such as 30s", timeout)
		}
		r.Timeout = t
	}
	if d.MaxTimeout > 0 && r.Timeout > d.MaxTimeout {
		r.Timeout = d.MaxTimeout
	}
	if page != "" {
		p, err := strconv.ParseBool(page)
		if err != nil {
			return Route{}, fmt.Errorf("page %q: want true or false", page)
		}
		r.Page = p
	}
	return r, nil
}

// kinds are the short names a route may use for the kinds people scale to zero.
var kinds = map[string]struct{ apiVersion, kind string }{
	"deployment":  {wake.AppsV1, "Deployment"},
	"deploy":      {wake.AppsV1, "Deployment"},
	"statefulset": {wake.AppsV1, "StatefulSet"},
	"sts":         {wake.AppsV1, "StatefulSet"},
	"rollout":     {wake.ArgoRolloutsV1a1, "Rollout"},
}

// ParseTarget reads "namespace/kind/name[:minReplicas]". kind is a short name (deployment,
// statefulset, rollout) or Kind.version.group for any other kind with /scale
// (Widget.v1.example.com). "namespace/name" means a Deployment.
func ParseTarget(s string) (wake.Target, error) {
	spec, min := s, int32(0)
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		n, err := strconv.ParseInt(s[i+1:], 10, 32)
		if err != nil || n < 1 || n > v1alpha1.MaxMinReplicas {
			return wake.Target{}, fmt.Errorf("target %q: replicas after ':' must be 1..%d", s, v1alpha1.MaxMinReplicas)
		}
		spec, min = s[:i], int32(n)
	}
	parts := strings.Split(spec, "/")
	var t wake.Target
	switch len(parts) {
	case 2:
		t = wake.Deployment(parts[0], parts[1])
	case 3:
		t.Namespace, t.Name = parts[0], parts[2]
		if k, ok := kinds[strings.ToLower(parts[1])]; ok {
			t.APIVersion, t.Kind = k.apiVersion, k.kind
		} else {
			kind, version, group, ok := splitKind(parts[1])
			if !ok {
				return wake.Target{}, fmt.Errorf("target %q: kind %q is neither deployment, statefulset, rollout nor Kind.version.group", s, parts[1])
			}
			t.APIVersion, t.Kind = group+"/"+version, kind
		}
	default:
		return wake.Target{}, fmt.Errorf("target %q: want namespace/kind/name", s)
	}
	if t.Namespace == "" || t.Name == "" {
		return wake.Target{}, fmt.Errorf("target %q: want namespace/kind/name", s)
	}
	t.MinReplicas = min
	return t, nil
}

// splitKind splits "Widget.v1.example.com" into its kind, version and group.
func splitKind(s string) (kind, version, group string, ok bool) {
	kind, rest, found := strings.Cut(s, ".")
	if !found {
		return "", "", "", false
	}
	version, group, found = strings.Cut(rest, ".")
	if !found || kind == "" || version == "" || group == "" {
		return "", "", "", false
	}
	return kind, version, group, true
}
