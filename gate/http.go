package gate

import (
	"html/template"
	"math"
	"net/http"
	"strconv"
	"strings"
)

// Paths the gate answers on. See Handler.
const (
	PathAuth     = "/auth"
	PathExtAuthz = "/ext_authz"
)

// Headers the gate sends back. X-Zerowake-Outcome is one of the outcome names; proxies can copy
// it to the upstream request (2xx) or pass it to the client (otherwise).
const (
	HeaderOutcome = "X-Zerowake-Outcome"
	HeaderReason  = "X-Zerowake-Reason"
)

// Headers in which proxies pass the original request's method: X-Forwarded-Method (Traefik,
// Caddy) and X-Original-Method (the usual nginx auth_request configuration). Envoy calls with
// the original method itself.
var methodHeaders = [...]string{"X-Forwarded-Method", "X-Original-Method"}

// Handler serves the forward-auth protocol:
//
//   - GET /auth?target=ns/kind/name[&target=…][&timeout=30s][&page=true] for nginx
//     auth_request, Traefik forwardAuth and Caddy forward_auth, which copy the client's headers
//     into the call: the route's parameters come only from the URL the proxy is configured
//     with, never from headers a client could set.
//   - any method on /ext_authz/<client path> for Envoy's ext_authz HTTP service, which appends
//     the client's path and query to its path_prefix and forwards only the client headers it is
//     told to: the parameters come only from the X-Zerowake-Target, X-Zerowake-Timeout and
//     X-Zerowake-Page headers the Envoy configuration adds.
//
// 200 lets the request through; 403 refuses it (the owner has not allowed the wake); 503 with
// Retry-After asks to retry (not ready within the timeout, failed, too many held, or the
// "starting up" page); 400 reports a malformed route.
func (g *Gate) Handler() http.Handler {
	return http.HandlerFunc(g.serve)
}

func (g *Gate) serve(w http.ResponseWriter, r *http.Request) {
	var mode int
	switch p := r.URL.Path; {
	case p == PathAuth || p == PathAuth+"/":
		mode = fromQuery
	case p == PathExtAuthz || strings.HasPrefix(p, PathExtAuthz+"/"):
		mode = fromHeader
	default:
		http.NotFound(w, r)
		return
	}
	route, err := parseRoute(mode, r.URL.Query(), r.Header, RouteDefaults{
		Timeout: g.cfg.Timeout, MaxTimeout: g.cfg.MaxTimeout, Page: g.cfg.Page, MaxTargets: g.cfg.MaxTargetsInRoute,
	})
	if err != nil {
		a := Answer{Outcome: OutcomeBadRoute, Reason: "BadRoute", Message: "bad route configuration: " + err.Error()}
		g.metrics.observe(a.Outcome, -1)
		g.logger.Info("Refusing a malformed route", "error", err.Error(), "url", r.URL.RequestURI())
		writeAnswer(w, r, a)
		return
	}
	method := r.Method
	for _, h := range methodHeaders {
		if m := r.Header.Get(h); m != "" {
			method = m
			break
		}
	}
	a := g.Check(r.Context(), &route, method, r.Header.Get("Accept"))
	switch a.Outcome {
	case OutcomeAwake:
	case OutcomeFailed, OutcomeBadRoute:
		g.logger.Info("Not letting a request through", "outcome", a.Outcome.String(), "reason", a.Reason, "message", a.Message)
	default:
		g.logger.V(1).Info("Answered", "outcome", a.Outcome.String(), "reason", a.Reason, "targets", len(route.Targets))
	}
	if a.Outcome == OutcomeCanceled {
		return // the proxy has gone; nobody reads an answer
	}
	writeAnswer(w, r, a)
}

// writeAnswer sends an answer as HTTP. A pass has no body: every proxy discards it.
func writeAnswer(w http.ResponseWriter, r *http.Request, a Answer) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set(HeaderOutcome, a.Outcome.String())
	if a.Reason != "" {
		h.Set(HeaderReason, a.Reason)
	}
	if a.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(retryAfterSeconds(a)))
	}
	if a.Outcome.Passes() {
		h.Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
		return
	}
	var body []byte
	if a.Outcome == OutcomePage {
		h.Set("Content-Type", "text/html; charset=utf-8")
		var b strings.Builder
		_ = pageTemplate.Execute(&b, struct{ Refresh int }{retryAfterSeconds(a)})
		body = []byte(b.String())
	} else {
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("X-Content-Type-Options", "nosniff")
		body = []byte("zerowake: " + a.Message + "\n")
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(a.Status())
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// retryAfterSeconds rounds up: Retry-After has whole seconds, and 0 would invite a busy loop.
func retryAfterSeconds(a Answer) int {
	return max(1, int(math.Ceil(a.RetryAfter.Seconds())))
}

// pageTemplate is the "starting up" page: it refreshes itself, so the browser asks again (and
// gets through once the targets are up) without anyone pressing reload.
var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{{.Refresh}}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Starting up…</title>
<style>body{font-family:system-ui,sans-serif;max-width:36em;margin:20vh auto;padding:0 1em;color:#333}</style>
</head>
<body>
<h1>Starting up…</h1>
<p>This service was idle and is being started. The page reloads by itself in {{.Refresh}} seconds.</p>
</body>
</html>
`))
