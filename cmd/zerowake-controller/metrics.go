package main

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"
)

// leading is 1 while this replica holds the leader election Lease (or runs without leader
// election) and 0 otherwise, so that "no replica leads" can be alerted on.
var leading = prometheus.NewGauge(prometheus.GaugeOpts{
	Namespace: "zerowake", Name: "leader",
	Help: "1 while this replica is the leader (holds the Lease, or runs with --leader-elect=false), else 0.",
})

// queueMetrics exports client-go workqueue metrics under the names client-go's own provider
// uses (workqueue_depth, workqueue_adds_total, ...), labelled by queue name only.
type queueMetrics struct {
	depth, unfinished, longest *prometheus.GaugeVec
	adds, retries              *prometheus.CounterVec
	latency, workDuration      *prometheus.HistogramVec
}

func newQueueMetrics(reg prometheus.Registerer) *queueMetrics {
	name := []string{"name"}
	buckets := prometheus.ExponentialBuckets(10e-9, 10, 11)
	m := &queueMetrics{
		depth:        prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: "workqueue", Name: "depth", Help: "Current depth of the workqueue."}, name),
		adds:         prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: "workqueue", Name: "adds_total", Help: "Adds handled by the workqueue."}, name),
		latency:      prometheus.NewHistogramVec(prometheus.HistogramOpts{Subsystem: "workqueue", Name: "queue_duration_seconds", Help: "Seconds an item stays in the workqueue before being requested.", Buckets: buckets}, name),
		workDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Subsystem: "workqueue", Name: "work_duration_seconds", Help: "Seconds processing an item takes.", Buckets: buckets}, name),
		unfinished:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: "workqueue", Name: "unfinished_work_seconds", Help: "Seconds of work in progress not yet observed by work_duration."}, name),
		longest:      prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: "workqueue", Name: "longest_running_processor_seconds", Help: "Seconds the longest running processor has been running."}, name),
		retries:      prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: "workqueue", Name: "retries_total", Help: "Retries handled by the workqueue."}, name),
	}
	reg.MustRegister(m.depth, m.adds, m.latency, m.workDuration, m.unfinished, m.longest, m.retries)
	return m
}

var _ workqueue.MetricsProvider = (*queueMetrics)(nil)

func (m *queueMetrics) NewDepthMetric(n string) workqueue.GaugeMetric {
	return m.depth.WithLabelValues(n)
}
func (m *queueMetrics) NewAddsMetric(n string) workqueue.CounterMetric {
	return m.adds.WithLabelValues(n)
}
func (m *queueMetrics) NewLatencyMetric(n string) workqueue.HistogramMetric {
	return m.latency.WithLabelValues(n)
}
func (m *queueMetrics) NewWorkDurationMetric(n string) workqueue.HistogramMetric {
	return m.workDuration.WithLabelValues(n)
}
func (m *queueMetrics) NewUnfinishedWorkSecondsMetric(n string) workqueue.SettableGaugeMetric {
	return m.unfinished.WithLabelValues(n)
}
func (m *queueMetrics) NewLongestRunningProcessorSecondsMetric(n string) workqueue.SettableGaugeMetric {
	return m.longest.WithLabelValues(n)
}
func (m *queueMetrics) NewRetriesMetric(n string) workqueue.CounterMetric {
	return m.retries.WithLabelValues(n)
}

// countingTransport counts the controller's API requests by verb, resource and status code, so
// its cost to the API server (writes per wake, writes while idle) is observable. Resource is
// taken from the URL path, so its values are the few resources the controller touches.
type countingTransport struct {
	next     http.RoundTripper
	requests *prometheus.CounterVec
}

func newCountingTransport(reg prometheus.Registerer) func(http.RoundTripper) http.RoundTripper {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "zerowake", Name: "api_requests_total",
		Help: "Requests to the Kubernetes API by verb (HTTP method, watch for watches), resource (with subresource) and status code.",
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

// resourceOf extracts "resource" or "resource/subresource" from an API path such as
// /apis/apps/v1/namespaces/shop/deployments/web/scale; other paths (discovery) count as "".
func resourceOf(path string) string {
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
