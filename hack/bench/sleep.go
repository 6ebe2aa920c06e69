package main

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/zerowake/zerowake/activity"
	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/internal/apicount"
	"github.com/zerowake/zerowake/wake"
)

// Sleep: the cost of sleeping. An active target's activity writes: two recorders (two gate
// replicas) each told of 100 calls a second for the whole phase, at idle-after 5m. Then sleep and
// wake cycles at idle-after 30s (the controller's minimum): the writes of one cycle, by
// everyone, and how long after idle-after the replicas reached zero.
type Sleep struct {
	// ActiveMinutes is how long the active phase ran; ActiveCalls the calls the recorders heard.
	ActiveMinutes float64 `json:"active_minutes"`
	ActiveCalls   int64   `json:"active_calls"`
	// ActiveWritesPerMin is the recorders' Lease updates per minute at idle-after 5m.
	ActiveWritesPerMin float64 `json:"active_writes_per_min"`
	// ActiveRefusedPerMin are the renewals a minute the API server refused (409: another
	// recorder renewed first).
	ActiveRefusedPerMin float64 `json:"active_refused_per_min"`
	Cycles              int     `json:"cycles"`
	// CycleWrites are the writes of one cycle (mean), by who made them and what they wrote:
	// "controller PUT scalerequests/status", "client PATCH scalerequests", ... The controller's
	// Lease writes are left out: its leader election renews every 2s whatever it does.
	CycleWrites map[string]float64 `json:"cycle_writes"`
	// PastIdleAfterMs is, per cycle, the time from the last call (WaitReady returning) plus
	// idle-after to the replicas seen at zero: the controller's margin for the renewal lag
	// (1.2 intervals), less the part of it the last renewal already spent, and the drain.
	PastIdleAfterMs []float64 `json:"past_idle_after_ms"`
	// WakeFromSleepMs is, per cycle, the time from the Wake call of a sleeping target to
	// WaitReady returning.
	WakeFromSleepMs []float64 `json:"wake_from_sleep_ms"`
}

// countedKube returns a clientset whose requests count into a registry of its own.
func countedKube(cfg *rest.Config) (kubernetes.Interface, *prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	c := rest.CopyConfig(cfg)
	c.Wrap(apicount.Transport(reg, ""))
	kube, err := kubernetes.NewForConfig(c)
	return kube, reg, err
}

// registryWrites sums a registry's api_requests_total by "VERB resource", writes only; those
// the API server refused count under "VERB resource (code)".
func registryWrites(reg *prometheus.Registry) map[string]float64 {
	out := map[string]float64{}
	families, err := reg.Gather()
	if err != nil {
		return out
	}
	for _, f := range families {
		if !strings.HasSuffix(f.GetName(), "api_requests_total") {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			switch labels["verb"] {
			case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
				key := labels["verb"] + " " + labels["resource"]
				if !strings.HasPrefix(labels["code"], "2") {
					// Refused (a conflict: someone else renewed first): a request, not a write.
					key += " (" + labels["code"] + ")"
				}
				out[key] += m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// controllerWrites reads the controller's writes by "VERB resource", leases left out.
func (b *bench) controllerWrites() map[string]float64 {
	out := map[string]float64{}
	for _, w := range []struct{ verb, resource string }{
		{"PUT", "scalerequests/status"}, {"PATCH", "deployments/scale"}, {"POST", "events"}, {"PATCH", "events"},
	} {
		if v, err := b.ctrl.Metric("zerowake_api_requests_total", "verb", w.verb, "resource", w.resource); err == nil {
			out[w.verb+" "+w.resource] = v
		}
	}
	return out
}

func diff(after, before map[string]float64, prefix string, into map[string]float64) {
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			into[prefix+" "+k] += d
		}
	}
}

func (b *bench) sleepScenario(ctx context.Context) error {
	const ns, name = "bench-sleep", "sleepy"
	res := &Sleep{CycleWrites: map[string]float64{}}
	if _, err := b.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	d := deployment(ns, name, 0)
	d.Annotations = map[string]string{v1alpha1.AnnotationIdleAfter: "5m"}
	if _, err := b.kube.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return err
	}

	// Two recorders play two gate replicas; the wake client plays a resolver.
	var recorders []*activity.Recorder
	var registries []*prometheus.Registry
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	for i := range 2 {
		kube, reg, err := countedKube(b.admin)
		if err != nil {
			return err
		}
		r := activity.NewRecorder(kube, activity.RecorderOptions{Namespace: ns, Identity: fmt.Sprintf("bench-%d", i)})
		if err := r.Start(runCtx); err != nil {
			return err
		}
		defer r.Stop()
		recorders, registries = append(recorders, r), append(registries, reg)
	}
	clientReg := prometheus.NewRegistry()
	clientCfg := rest.CopyConfig(b.admin)
	clientCfg.Wrap(apicount.Transport(clientReg, ""))
	client, err := wake.NewForConfig(clientCfg, wake.Options{Namespace: ns, Activity: recorders[0]})
	if err != nil {
		return err
	}
	if err := client.Start(runCtx); err != nil {
		return err
	}
	defer client.Stop()
	target := wake.Deployment(ns, name)
	if _, err := client.Wake(ctx, target); err != nil {
		return err
	}
	if _, err := client.WaitReady(ctx, target); err != nil {
		return err
	}
	lease := activity.LeaseName("Deployment", name)
	if err := poll(ctx, 60*time.Second, 100*time.Millisecond, "the controller to create the activity Lease", func(ctx context.Context) (bool, error) {
		_, err := b.kube.CoordinationV1().Leases(ns).Get(ctx, lease, metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		return err
	}

	// Active: 100 calls a second on each recorder.
	active := 2 * time.Minute
	if b.cfg.quick {
		active = time.Minute
	}
	recorderWrites := func() (written, refused float64) {
		for _, reg := range registries {
			for k, v := range registryWrites(reg) {
				switch {
				case k == "PUT leases":
					written += v
				case strings.HasPrefix(k, "PUT leases ("):
					refused += v
				}
			}
		}
		return written, refused
	}
	before, refusedBefore := recorderWrites()
	var calls atomic.Int64
	tick := time.NewTicker(10 * time.Millisecond)
	end := time.Now().Add(active)
	for time.Now().Before(end) {
		<-tick.C
		for _, r := range recorders {
			r.Touch(ns, "Deployment", name)
			calls.Add(1)
		}
	}
	tick.Stop()
	res.ActiveMinutes, res.ActiveCalls = active.Minutes(), calls.Load()
	written, refused := recorderWrites()
	res.ActiveWritesPerMin = (written - before) / active.Minutes()
	res.ActiveRefusedPerMin = (refused - refusedBefore) / active.Minutes()
	logf("sleep: %d calls in %s: %.1f activity writes a minute at idle-after 5m (%.1f more refused)",
		calls.Load(), active, res.ActiveWritesPerMin, res.ActiveRefusedPerMin)

	// Cycles at idle-after 30s, once the controller has given the Lease its new interval and the
	// target has slept once (what it did before the change is not a cycle's).
	if _, err := b.kube.AppsV1().Deployments(ns).Patch(ctx, name, "application/merge-patch+json",
		[]byte(`{"metadata":{"annotations":{"`+v1alpha1.AnnotationIdleAfter+`":"30s"}}}`), metav1.PatchOptions{}); err != nil {
		return err
	}
	idleAfter := 30 * time.Second
	if err := poll(ctx, 30*time.Second, 100*time.Millisecond, "the activity Lease's new interval", func(ctx context.Context) (bool, error) {
		l, err := b.kube.CoordinationV1().Leases(ns).Get(ctx, lease, metav1.GetOptions{})
		return err == nil && l.Spec.LeaseDurationSeconds != nil && *l.Spec.LeaseDurationSeconds == int32(activity.Interval(idleAfter)/time.Second), nil
	}); err != nil {
		return err
	}
	asleep := func() (time.Time, error) {
		var zeroAt time.Time
		err := poll(ctx, 3*idleAfter, 50*time.Millisecond, "the target to sleep", func(ctx context.Context) (bool, error) {
			dep, err := b.kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil || *dep.Spec.Replicas != 0 {
				return false, err
			}
			zeroAt = time.Now()
			return true, nil
		})
		return zeroAt, err
	}
	if _, err := asleep(); err != nil {
		return err
	}
	cycles := 3
	if b.cfg.quick {
		cycles = 2
	}
	for i := range cycles {
		ctrlBefore, clientBefore := b.controllerWrites(), registryWrites(clientReg)
		recBefore := []map[string]float64{registryWrites(registries[0]), registryWrites(registries[1])}
		wakeStart := time.Now()
		if _, err := client.Wake(ctx, target); err != nil {
			return err
		}
		if _, err := client.WaitReady(ctx, target); err != nil {
			return err
		}
		lastCall := time.Now()
		res.WakeFromSleepMs = append(res.WakeFromSleepMs, float64(lastCall.Sub(wakeStart).Milliseconds()))
		// A call let through once it is up, as a gate would record it.
		recorders[1].Touch(ns, "Deployment", name)
		zeroAt, err := asleep()
		if err != nil {
			return err
		}
		res.PastIdleAfterMs = append(res.PastIdleAfterMs, float64(zeroAt.Sub(lastCall.Add(idleAfter)).Milliseconds()))
		// The Asleep status write trails the scale to zero by a round trip.
		time.Sleep(time.Second)
		diff(b.controllerWrites(), ctrlBefore, "controller", res.CycleWrites)
		diff(registryWrites(clientReg), clientBefore, "client", res.CycleWrites)
		diff(registryWrites(registries[0]), recBefore[0], "recorders", res.CycleWrites)
		diff(registryWrites(registries[1]), recBefore[1], "recorders", res.CycleWrites)
		logf("sleep: cycle %d: woken in %s, zero %s after idle-after", i+1,
			time.Duration(res.WakeFromSleepMs[i])*time.Millisecond, time.Duration(res.PastIdleAfterMs[i])*time.Millisecond)
	}
	res.Cycles = cycles
	for k := range res.CycleWrites {
		res.CycleWrites[k] /= float64(cycles)
	}
	b.results.Sleep = res
	return nil
}

// sleepRows adds the sleep scenario's rows to the table.
func sleepRows(r *Results, add func(metric, value, target string, met *bool)) {
	s := r.Sleep
	if s == nil {
		add("sleep", "not run", "", nil)
		return
	}
	add(fmt.Sprintf("sleep.active_writes_per_min (idle-after 5m, 2 recorders, %d calls in %.0f min)", s.ActiveCalls, s.ActiveMinutes),
		fmt.Sprintf("%.1f", s.ActiveWritesPerMin), "≤ 1", check(s.ActiveWritesPerMin <= 1))
	add("  renewals refused a minute (409: another recorder renewed first)", fmt.Sprintf("%.1f", s.ActiveRefusedPerMin), "", nil)
	total := 0.0
	parts := []string{}
	for k, v := range s.CycleWrites {
		total += v
		parts = append(parts, fmt.Sprintf("%s %.1f", k, v))
	}
	sort.Strings(parts)
	add(fmt.Sprintf("sleep.writes_per_cycle (wake from zero, then sleep; idle-after 30s, mean of %d; controller leases left out)", s.Cycles), fmt.Sprintf("%.1f", total), "", nil)
	add("  of which", strings.Join(parts, ", "), "", nil)
	add("sleep.past_idle_after_ms (last call + idle-after → replicas 0), per cycle", joinMs(s.PastIdleAfterMs), "0 ≤ and ≤ 2 intervals (12000)",
		check(minOf(s.PastIdleAfterMs) >= 0 && maxOf(s.PastIdleAfterMs) <= 12000))
	add("sleep.wake_from_sleep_ms (Wake → WaitReady), per cycle", joinMs(s.WakeFromSleepMs), "", nil)
}

func joinMs(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(parts, ", ")
}

func maxOf(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

func minOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	m := v[0]
	for _, x := range v[1:] {
		m = min(m, x)
	}
	return m
}
