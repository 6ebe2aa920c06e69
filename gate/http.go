package gate

import (
	"crypto/sha256"
	"crypto/subtle"
	"html/template"
	"math"
	"net/http"
	"net/url"
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

// genericMessages are what clients read when details are not exposed: one fixed text per
// outcome, naming nothing of the cluster.
var genericMessages = [...]string{
	OutcomeRefused:      "this service is not started on request",
	OutcomeTimeout:      "the service is starting; retry shortly",
	OutcomeFailed:       "the service cannot be started now; retry later",
	OutcomeOverflow:     "too many requests are waiting; retry shortly",
	OutcomeBadRoute:     "the proxy's route to this service is misconfigured",
	OutcomeUnavailable:  "the gate is restarting; retry",
	OutcomeUnauthorized: "unauthorized",
}

// Handler serves the forward-auth protocol:
//
//   - GET /auth?target=ns/kind/name[&target=…][&service=ns/name][&timeout=30s][&page=true] for nginx
//     auth_request, Traefik forwardAuth and Caddy forward_auth, which copy the client's headers
//     into the call: the route's parameters come only from the URL the proxy is configured
//     with, never from headers a client could set.
//   - any method on /ext_authz/<client path> for Envoy's ext_authz HTTP service, which appends
//     the client's path and query to its path_prefix and forwards only the client headers it is
//     told to: the parameters come only from the X-Zerowake-Target, X-Zerowake-Service,
//     X-Zerowake-Timeout and X-Zerowake-Page headers the Envoy configuration adds.
//   - any method on /route/<parameters>/-[<client path>] for proxies configured with a path
//     prefix only (Envoy Gateway's extAuth, the Gateway API ExternalAuth filter, Istio's
//     pathPrefix): the parameters come only from the part before "/-" (see [PathRoute]), the
//     token from there or from X-Zerowake-Token; the client's path and query after it are
//     never read.
//
// 200 lets the request through; 403 refuses it (the owner has not allowed the wake); 503 with
// Retry-After asks to retry (not ready within the timeout, failed, too many held, or the
// "starting up" page); 400 reports a malformed route.
func (g *Gate) Handler() http.Handler {
	return http.HandlerFunc(g.serve)
}

func (g *Gate) serve(w http.ResponseWriter, r *http.Request) {
	mode, ok := routeSource(r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	// A /route/ path without its end has no parameters, token included: that call is refused.
	query, pathErr := routeValues(mode, r.URL)
	if !g.authorized(mode, query, r.Header) {
		// No detail, no write; logged without anything the caller sent.
		a := Answer{Outcome: OutcomeUnauthorized}
		g.metrics.observe(a.Outcome, -1)
		g.logSometimes("Refusing a call without valid credentials", "path", pathKind(mode))
		g.writeAnswer(w, r, a)
		return
	}
	route, err := parseRoute(mode, query, r.Header, RouteDefaults{
		Timeout: g.cfg.Timeout, MaxTimeout: g.cfg.MaxTimeout, Page: g.cfg.Page, MaxTargets: g.cfg.MaxTargetsInRoute,
	})
	if pathErr != nil {
		err = pathErr
	}
	if err != nil {
		a := Answer{Outcome: OutcomeBadRoute, Reason: "BadRoute", Message: "bad route configuration: " + err.Error()}
		g.metrics.observe(a.Outcome, -1)
		// The path only: Envoy appends the client's path and query (tokens and all).
		g.logSometimes("Refusing a malformed route", "error", err.Error(), "path", pathKind(mode))
		g.writeAnswer(w, r, a)
		return
	}
	// The method header is read only on /auth and only the one the proxy sets: the proxies
	// there copy the client's headers into the call. Envoy calls with the original method.
	method := r.Method
	if mode == fromQuery {
		if m := r.Header.Get(g.cfg.MethodHeader); m != "" {
			method = m
		}
	}
	a := g.Check(r.Context(), &route, method, r.Header.Get("Accept"))
	switch a.Outcome {
	case OutcomeAwake, OutcomeWoken, OutcomePage, OutcomeCanceled:
		g.logger.V(1).Info("Answered", "outcome", a.Outcome.String(), "reason", a.Reason, "targets", len(route.Targets))
	default:
		g.logSometimes("Not letting a request through", "outcome", a.Outcome.String(), "reason", a.Reason, "message", a.Message)
	}
	if a.Outcome == OutcomeCanceled {
		return // the proxy has gone; nobody reads an answer
	}
	g.writeAnswer(w, r, a)
}

// pathKind names the gate path a call came on, without the client's part of it.
func pathKind(mode int) string {
	switch mode {
	case fromQuery:
		return PathAuth
	case fromPath:
		return PathRoute
	}
	return PathExtAuthz
}

// logSometimes logs at Info while the log's rate limit allows (a caller can make the gate
// refuse as often as it likes), and at debug level otherwise; the answers metric counts all.
func (g *Gate) logSometimes(msg string, kv ...any) {
	if g.logLimit.Allow() {
		g.logger.Info(msg, kv...)
	} else {
		g.logger.V(1).Info(msg, kv...)
	}
}

// writeAnswer sends an answer as HTTP. A pass has no body: every proxy discards it.
func (g *Gate) writeAnswer(w http.ResponseWriter, r *http.Request, a Answer) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set(HeaderOutcome, a.Outcome.String())
	if a.Reason != "" && g.cfg.ExposeDetails {
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
		msg := a.Message
		if !g.cfg.ExposeDetails || msg == "" {
			msg = genericMessages[a.Outcome]
		}
		body = []byte("zerowake: " + msg + "\n")
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(a.Status())
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// Where the proxy puts the gate's token: a header it sets on the call (nginx proxy_set_header,
// Caddy header_up, Envoy headers_to_add, Istio includeAdditionalHeadersInCheck), or, for
// proxies that cannot add a header to their forward-auth call (Traefik, Envoy Gateway, the
// Gateway API ExternalAuth filter), the token parameter of the /auth URL or /route/ path it is
// configured with.
const (
	HeaderToken = "X-Zerowake-Token"
	paramToken  = "token"
)

// authorized checks the proxy's token, when the gate has one, in constant time (of the
// digests, so that neither content nor length leaks). On /ext_authz only the header counts:
// Envoy appends the client's query to that path; on /route/ the route's part of the path counts,
// never the client's path or query after it.
func (g *Gate) authorized(mode int, query url.Values, header http.Header) bool {
	if g.tokenDigest == nil {
		return true
	}
	ok := 0
	for _, v := range header.Values(HeaderToken) {
		ok |= g.tokenMatches(v)
	}
	if mode != fromHeader {
		for _, v := range query[paramToken] {
			ok |= g.tokenMatches(v)
		}
	}
	return ok == 1
}

func (g *Gate) tokenMatches(v string) int {
	d := sha256.Sum256([]byte(v))
	return subtle.ConstantTimeCompare(d[:], g.tokenDigest)
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
