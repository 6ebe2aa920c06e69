// Package apicount counts a process's requests to the Kubernetes API in a Prometheus counter.
package apicount

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// countingTransport counts a process's API requests by verb, resource and status code, so its
// cost to the API server (writes per wake, writes while idle, calls per answer) is observable.
// Resource is taken from the URL path, so its values are the few resources the process touches.
type countingTransport struct {
	next     http.RoundTripper
	requests *prometheus.CounterVec
}

// Transport registers zerowake_<subsystem>_api_requests_total (zerowake_api_requests_total for
// an empty subsystem) with reg and returns the wrapper that counts into it, for
// rest.Config.Wrap.
func Transport(reg prometheus.Registerer, subsystem string) func(http.RoundTripper) http.RoundTripper {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "zerowake", Subsystem: subsystem, Name: "api_requests_total",
		Help: "Requests to the Kubernetes API by verb (HTTP method, WATCH for watches), resource (with subresource) and status code.",
	}, []string{"verb", "resource", "code"})
	reg.MustRegister(requests)
	return func(next http.RoundTripper) http.RoundTripper {
		return &countingTransport{next: next, requests: requests}
	}
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	code := "error"
	if err == nil {
		code = strconv.Itoa(resp.StatusCode)
	}
	verb := req.Method
	if req.URL.Query().Get("watch") == "true" {
		verb = "WATCH"
	}
	t.requests.WithLabelValues(verb, ResourceOf(req.URL.Path), code).Inc()
	return resp, err
}

// ResourceOf extracts "resource" or "resource/subresource" from an API path such as
// /apis/apps/v1/namespaces/shop/deployments/web/scale; other paths (discovery) count as "".
func ResourceOf(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(parts) >= 3 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 4 && parts[0] == "apis":
		parts = parts[3:]
	default:
		return ""
	}
	if len(parts) >= 2 && parts[0] == "namespaces" {
		if len(parts) == 2 {
			return "namespaces"
		}
		parts = parts[2:]
	}
	switch len(parts) {
	case 0:
		return ""
	case 1, 2:
		return parts[0]
	default:
		return parts[0] + "/" + parts[2]
	}
}
