package main

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// countingTransport counts the gate's API requests, so that "an awake target costs no API
// call" and "a herd costs one write" can be read off /metrics.
type countingTransport struct {
	next     http.RoundTripper
	requests *prometheus.CounterVec
}

func newCountingTransport(reg prometheus.Registerer) func(http.RoundTripper) http.RoundTripper {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "zerowake", Subsystem: "gate", Name: "api_requests_total",
		Help: "The gate's requests to the Kubernetes API by verb (HTTP method, WATCH for watches), resource and status code.",
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
	t.requests.WithLabelValues(verb, resourceOf(req.URL.Path), code).Inc()
	return resp, err
}

// resourceOf returns the resource of an API path; the gate only ever touches scalerequests,
// so anything else (discovery) is "other" and the label stays bounded.
func resourceOf(path string) string {
	if strings.Contains(path, "/scalerequests") {
		return "scalerequests"
	}
	return "other"
}
