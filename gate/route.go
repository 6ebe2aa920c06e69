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
// Where the configuration can set only a path prefix (Envoy Gateway, the Gateway API's
// ExternalAuth filter), the route is that prefix (see PathRoute).
const (
	fromQuery  = iota // GET /auth?target=…
	fromHeader        // /ext_authz/<client path>, X-Zerowake-Target: …
	fromPath          // /route/target=…/-/<client path>
)

// PathRoute is the gate path for proxies whose only say over their call is a path prefix, to
// which most append the client's path and query (Envoy's path_prefix, Envoy Gateway's extAuth
// http.path, Istio's pathPrefix, the Gateway API ExternalAuth filter's http.path):
//
//	/route/target=shop/deployment/web&timeout=30s/-[<client path>]
//
// Between "/route/" and routeEnd are /auth's query parameters in the query's syntax
// (percent-encoded where needed). routeEnd cannot occur inside them, as no namespace, kind,
// name, duration or boolean is "-", so the first "/-/", or a final "/-", is the configured
// one; what follows is the client's and is never read. A path without it is refused, so a
// prefix configured without routeEnd fails at once (on every client path without "/-/").
const (
	PathRoute = "/route"
	routeEnd  = "/-"
)

// routeSource tells where the route of a call on path comes from; false for a path the gate
// does not serve.
func routeSource(path string) (mode int, ok bool) {
	switch {
	case path == PathAuth || path == PathAuth+"/":
		return fromQuery, true
	case path == PathExtAuthz || strings.HasPrefix(path, PathExtAuthz+"/"):
		return fromHeader, true
	case strings.HasPrefix(path, PathRoute+"/"):
		return fromPath, true
	}
	return 0, false
}

// routeValues returns the URL parameters a call's route (and, but for header mode, token) are
// read from: the query of /auth, the route part of a /route/ path, none for /ext_authz.
func routeValues(mode int, u *url.URL) (url.Values, error) {
	switch mode {
	case fromQuery:
		return u.Query(), nil
	case fromPath:
		return routeInPath(u.EscapedPath())
	}
	return nil, nil
}

// routeInPath returns the parameters between "/route/" and routeEnd in a path as sent.
func routeInPath(escapedPath string) (url.Values, error) {
	rest, _ := strings.CutPrefix(escapedPath, PathRoute+"/")
	params, _, found := strings.Cut(rest, routeEnd+"/")
	if !found {
		if params, found = strings.CutSuffix(rest, routeEnd); !found {
			return nil, fmt.Errorf("the path has no %q after the route (want %s/target=namespace/kind/name%s)", routeEnd, PathRoute, routeEnd)
		}
	}
	v, err := url.ParseQuery(params)
	if err != nil {
		return nil, fmt.Errorf("the route in the path: %w", err)
	}
	return v, nil
}

// ReadRoute reads the route of a forward-auth call as the gate's handler does, without
// checking the token: for tools and tests that check a proxy's configuration against the gate.
func ReadRoute(r *http.Request, d RouteDefaults) (Route, error) {
	mode, ok := routeSource(r.URL.Path)
	if !ok {
		return Route{}, fmt.Errorf("the gate serves no route on %s (want %s, %s/… or %s/…)", r.URL.Path, PathAuth, PathExtAuthz, PathRoute)
	}
	values, err := routeValues(mode, r.URL)
	if err != nil {
		return Route{}, err
	}
	return parseRoute(mode, values, r.Header, d)
}

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

// parseRoute reads a route from the URL's parameters (query or path) or from the headers,
// never a mix of both (see fromQuery, fromPath and fromHeader).
func parseRoute(mode int, query url.Values, header http.Header, d RouteDefaults) (Route, error) {
	var targets, services []string
	var timeout, page string
	if mode != fromHeader {
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
