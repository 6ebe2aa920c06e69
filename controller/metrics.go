package controller

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the controller's own Prometheus metrics. Every label takes values from a fixed
// set (condition reasons), never from object names, so cardinality stays bounded.
type Metrics struct {
	scales       *prometheus.CounterVec
	wakeToScaled prometheus.Histogram
	wakeToReady  prometheus.Histogram
	statusWrites *prometheus.CounterVec
	active       prometheus.GaugeFunc

	sleeps         prometheus.Counter
	wakesFromSleep prometheus.Counter
	sleepAborted   *prometheus.CounterVec
	idleToZero     prometheus.Histogram
}

// Reasons a sleep was called off or undone: the values of sleep_aborted_total's reason label.
const (
	abortActivity      = "activity"
	abortSignal        = "signal"
	abortTargetChanged = "target_changed"
	abortRestart       = "restart"
	abortOverridden    = "overridden"
)

// wakeBuckets span a warm API round trip (ms) to a slow image pull (minutes).
var wakeBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// NewMetrics registers the controller's metrics with reg. active reports the number of
// requests in flight.
func NewMetrics(reg prometheus.Registerer, active func() float64) *Metrics {
	m := &Metrics{
		scales: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zerowake", Name: "scale_total",
			Help: "Scale attempts by outcome: a Scaled condition reason (ScaledFromZero, ScaledUp, AlreadyScaled, ScaleFight, RescaleWindow) or a failure reason.",
		}, []string{"reason"}),
		wakeToScaled: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "zerowake", Name: "wake_to_scaled_seconds",
			Help:    "Time from a signal (spec.requestedAt, or creation) to the target's replicas being written.",
			Buckets: wakeBuckets,
		}),
		wakeToReady: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "zerowake", Name: "wake_to_ready_seconds",
			Help:    "Cold-start time: from a signal (bounded by the controller's own first sight of it) to the controller first seeing the target with minReplicas ready replicas.",
			Buckets: wakeBuckets,
		}),
		statusWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zerowake", Name: "status_writes_total",
			Help: "ScaleRequest status writes by result (ok, conflict, error).",
		}, []string{"result"}),
		active: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "zerowake", Name: "active_requests",
			Help: "ScaleRequests whose target is being watched until ready.",
		}, active),
		sleeps: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "zerowake", Name: "sleeps_total",
			Help: "Idle targets the controller scaled to zero (their owners asked with zerowake.dev/idle-after).",
		}),
		wakesFromSleep: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "zerowake", Name: "wakes_from_sleep_total",
			Help: "Signals that woke a target the controller had put to sleep.",
		}),
		sleepAborted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zerowake", Name: "sleep_aborted_total",
			Help: "Sleeps called off before the scale to zero (activity, signal, target_changed, restart) or undone by something else scaling the target up (overridden).",
		}, []string{"reason"}),
		idleToZero: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "zerowake", Name: "sleep_drain_seconds",
			Help:    "Time from the decision to put a target to sleep (Draining) to its replicas written to zero: the gates' acknowledgements.",
			Buckets: wakeBuckets,
		}),
	}
	if reg != nil {
		reg.MustRegister(m.scales, m.wakeToScaled, m.wakeToReady, m.statusWrites, m.active,
			m.sleeps, m.wakesFromSleep, m.sleepAborted, m.idleToZero)
	}
	return m
}
