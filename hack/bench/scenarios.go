package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/wake"
)

var deploymentsGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}

// fromZeroPatch is the controller's own scale-from-zero request: one JSON patch on /scale that
// sets replicas only if there are none.
func fromZeroPatch(minReplicas int32) []byte {
	return []byte(`[{"op":"test","path":"/spec","value":{}},{"op":"add","path":"/spec/replicas","value":` +
		strconv.Itoa(int(minReplicas)) + `}]`)
}

// idleTargets creates namespace ns holding n idle Deployments named after prefix, and a tracker
// of them and of their ScaleRequests that runs until ctx ends.
func (b *bench) idleTargets(ctx context.Context, ns, prefix string, n int) ([]string, *tracker, error) {
	if err := createNamespace(ctx, b.kube, ns); err != nil {
		return nil, nil, err
	}
	targets := names(prefix, n)
	if err := createDeployments(ctx, b.kube, ns, targets, 0); err != nil {
		return nil, nil, err
	}
	tr, err := newTracker(ctx, b.kube, b.zw, ns, 1)
	return targets, tr, err
}

type floorSamples struct{ patchScaled, patchReady, create, scale, status, total samples }

// floor times, with no controller running, first the one-PATCH floor: one /scale PATCH per
// fresh idle target, from being sent until the replicas and then the Deployment's readiness
// are seen, as scenario 2 times its wakes; then the three requests a ScaleRequest-driven wake
// makes: the resolver's create, the scale write and the status write.
func (b *bench) floor(ctx context.Context) error {
	if err := b.patchFloor(ctx); err != nil {
		return err
	}
	return b.requestsFloor(ctx)
}

// patchFloor is the one-PATCH floor of scenario 2: sequential, each round once the previous
// target is ready.
func (b *bench) patchFloor(ctx context.Context) error {
	const ns, warmup = "zw-bench-floor-patch", 5
	n := b.cfg.floorN
	tctx, tcancel := context.WithCancel(ctx)
	defer tcancel()
	targets, tr, err := b.idleTargets(tctx, ns, "patch", n+warmup)
	if err != nil {
		return err
	}
	scales := b.scales.Scales(ns)
	for i, name := range targets {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		sent := time.Now()
		_, err := scales.Patch(rctx, deploymentsGVR, name, types.JSONPatchType, fromZeroPatch(1), metav1.PatchOptions{})
		cancel()
		if err != nil {
			return fmt.Errorf("scale: %w", err)
		}
		if err := tr.wait(ctx, 60*time.Second, "Deployment "+name+" to be ready", func(t *tracker) bool {
			e := t.byName[name]
			return e != nil && !e.specScaled.IsZero() && !e.deployReady.IsZero()
		}); err != nil {
			return err
		}
		if i < warmup {
			continue
		}
		e := tr.get(name)
		b.floorTs.patchScaled = append(b.floorTs.patchScaled, e.specScaled.Sub(sent))
		b.floorTs.patchReady = append(b.floorTs.patchReady, e.deployReady.Sub(sent))
	}
	b.results.Floor.PatchScaledMs = b.floorTs.patchScaled.percentiles()
	b.results.Floor.PatchReadyMs = b.floorTs.patchReady.percentiles()
	logf("floor: one PATCH sent → replicas seen %s, → Deployment ready %s ms", ms(b.results.Floor.PatchScaledMs), ms(b.results.Floor.PatchReadyMs))
	return nil
}

// requestsFloor times the three-request floor.
func (b *bench) requestsFloor(ctx context.Context) error {
	const ns, warmup = "zw-bench-floor", 5
	n := b.cfg.floorN
	// Each round waits, untimed, for its Deployment to be ready before the next begins, as
	// scenario 2 does, so that both see the same background work (pods starting).
	tctx, tcancel := context.WithCancel(ctx)
	defer tcancel()
	targets, tr, err := b.idleTargets(tctx, ns, "floor", n+warmup)
	if err != nil {
		return err
	}
	srs := b.zw.ZerowakeV1alpha1().ScaleRequests(ns)
	scales := b.scales.Scales(ns)
	s := b.floorTs
	cpu0 := b.cpuSeconds()
	for i, name := range targets {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		t0 := time.Now()
		sr, err := srs.Create(rctx, scaleRequest(ns, name), metav1.CreateOptions{})
		t1 := time.Now()
		if err != nil {
			cancel()
			return fmt.Errorf("create: %w", err)
		}
		if _, err := scales.Patch(rctx, deploymentsGVR, name, types.JSONPatchType, fromZeroPatch(1), metav1.PatchOptions{}); err != nil {
			cancel()
			return fmt.Errorf("scale: %w", err)
		}
		t2 := time.Now()
		now := metav1.Now()
		sr.Status = v1alpha1.ScaleRequestStatus{
			ObservedGeneration: sr.Generation, Phase: v1alpha1.PhaseScaling, PreviousReplicas: ptr.To[int32](0), Replicas: 1,
			LastScaleTime: &now,
			Conditions: []metav1.Condition{
				{Type: v1alpha1.ConditionScaled, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonScaledFromZero,
					Message: "Scaled Deployment/" + name + " from 0 to 1 replicas", ObservedGeneration: sr.Generation, LastTransitionTime: now},
				{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonWaitingForReplicas,
					Message: "waiting for Deployment/" + name + " to have 1 ready replicas", ObservedGeneration: sr.Generation, LastTransitionTime: now},
			},
		}
		_, err = srs.UpdateStatus(rctx, sr, metav1.UpdateOptions{FieldManager: "zerowake-controller"})
		t3 := time.Now()
		cancel()
		if err != nil {
			return fmt.Errorf("status: %w", err)
		}
		if err := tr.wait(ctx, 60*time.Second, "Deployment "+name+" to be ready", func(t *tracker) bool {
			e := t.byName[name]
			return e != nil && !e.deployReady.IsZero()
		}); err != nil {
			return err
		}
		if i < warmup {
			continue
		}
		s.create = append(s.create, t1.Sub(t0))
		s.scale = append(s.scale, t2.Sub(t1))
		s.status = append(s.status, t3.Sub(t2))
		s.total = append(s.total, t3.Sub(t0))
	}
	b.floorTs = s
	f := &b.results.Floor
	f.N, f.CreateMs, f.ScaleMs, f.StatusMs, f.TotalMs = n, s.create.percentiles(), s.scale.percentiles(), s.status.percentiles(), s.total.percentiles()
	f.CPUS = cpuDelta(cpu0, b.cpuSeconds())
	logf("floor: create %s, scale %s, status %s, total %s ms", ms(b.results.Floor.CreateMs), ms(b.results.Floor.ScaleMs),
		ms(b.results.Floor.StatusMs), ms(b.results.Floor.TotalMs))
	// No controller should ever find these half-done requests.
	return srs.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
}

// burstFloor is the one-PATCH floor of a burst of n: the benchmark PATCHes /scale of n fresh
// idle Deployments at once (100 goroutines, as the burst's creates), then waits for all to be
// ready. No ScaleRequest names them and they carry no wake label, so the controller, idle
// meanwhile, never hears of them: the figures are the control plane's alone.
func (b *bench) burstFloor(ctx context.Context, ns string, n int) error {
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := createNamespace(ctx, b.kube, ns); err != nil {
		return err
	}
	targets := names("bfloor", n)
	if err := createDeploymentsNoWait(ctx, b.kube, ns, targets, 0, false); err != nil {
		return err
	}
	if err := waitObserved(ctx, b.kube, ns, n); err != nil {
		return err
	}
	tr, err := newTracker(tctx, b.kube, b.zw, ns, 1)
	if err != nil {
		return err
	}
	scales := b.scales.Scales(ns)
	cpu0 := b.cpuSeconds()
	t0 := time.Now()
	sent := make([]time.Time, n)
	err = parallel(ctx, n, 100, func(ctx context.Context, i int) error {
		sent[i] = time.Now()
		_, err := scales.Patch(ctx, deploymentsGVR, targets[i], types.JSONPatchType, fromZeroPatch(1), metav1.PatchOptions{})
		return err
	})
	if err != nil {
		return err
	}
	if err := tr.wait(ctx, burstTimeout(n), fmt.Sprintf("%d Deployments to be ready", n), func(t *tracker) bool {
		return t.counts.specScaled >= n && t.counts.deployReady >= n
	}); err != nil {
		return err
	}
	r := Burst{Deployments: n, FloorCPUS: cpuDelta(cpu0, b.cpuSeconds())}
	tr.mu.Lock()
	r.FloorAllScaledS = round2(tr.last.specScaled.Sub(t0).Seconds())
	r.FloorAllReadyS = round2(tr.last.deployReady.Sub(t0).Seconds())
	tr.mu.Unlock()
	r.FloorWakeScaledMs = tr.scaledSince(targets, sent).percentiles()
	b.results.Bursts = append(b.results.Bursts, r)
	logf("burst %d floor: one PATCH each: scaled in %.2fs, ready in %.2fs; CPU seconds %v", n, r.FloorAllScaledS, r.FloorAllReadyS, r.FloorCPUS)
	return nil
}

// burstTimeout bounds each wait of a burst of n: generous, as it only catches a burst that
// never completes.
func burstTimeout(n int) time.Duration {
	return 5*time.Minute + time.Duration(n)*100*time.Millisecond
}

type singleSamples struct {
	scaled, status, ready, detect samples
	// The same, timed from the create being sent (for the plot, against the floor's rounds).
	sentScaled, sentStatus, sentReady samples
}

// runSingle wakes distinct idle Deployments one after the other, each once the previous is Ready.
func (b *bench) runSingle(ctx context.Context) error {
	const ns, warmup = "zw-bench-single", 3
	n := b.cfg.singleN
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	targets, tr, err := b.idleTargets(tctx, ns, "web", n+warmup)
	if err != nil {
		return err
	}
	srs := b.zw.ZerowakeV1alpha1().ScaleRequests(ns)
	var s singleSamples
	reasons := map[string]int{}
	var profileDone func()
	cpu0 := b.cpuSeconds()
	for i, name := range targets {
		if i == warmup {
			profileDone = b.cpuProfile(ctx, "single", 30*time.Second)
		}
		rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
		sent := time.Now()
		_, err := srs.Create(rctx, scaleRequest(ns, name), metav1.CreateOptions{})
		created := time.Now()
		rcancel()
		if err != nil {
			return fmt.Errorf("create: %w", err)
		}
		err = tr.wait(ctx, 60*time.Second, "ScaleRequest "+name+" to be Ready", func(t *tracker) bool {
			e := t.byName[name]
			return e != nil && !e.specScaled.IsZero() && !e.condScaled.IsZero() && !e.condReady.IsZero() && !e.deployReady.IsZero()
		})
		if err != nil {
			return err
		}
		e := tr.get(name)
		reasons[e.scaledReasons]++
		if i < warmup {
			continue
		}
		s.scaled = append(s.scaled, e.specScaled.Sub(created))
		s.status = append(s.status, e.condScaled.Sub(created))
		s.ready = append(s.ready, e.condReady.Sub(created))
		s.detect = append(s.detect, e.condReady.Sub(e.deployReady))
		s.sentScaled = append(s.sentScaled, e.specScaled.Sub(sent))
		s.sentStatus = append(s.sentStatus, e.condScaled.Sub(sent))
		s.sentReady = append(s.sentReady, e.condReady.Sub(sent))
	}
	if profileDone != nil {
		profileDone()
	}
	b.single = s
	r := Single{N: n, ScaledMs: s.scaled.percentiles(), StatusMs: s.status.percentiles(), ReadyMs: s.ready.percentiles(),
		ReadyDetectMs: s.detect.percentiles(), CPUS: cpuDelta(cpu0, b.cpuSeconds())}
	r.SentScaledMs, r.SentReadyMs = s.sentScaled.percentiles(), s.sentReady.percentiles()
	r.ScaledRatioP50 = ratio(r.SentScaledMs.P50, b.results.Floor.PatchScaledMs.P50)
	r.ReadyRatioP50 = ratio(r.SentReadyMs.P50, b.results.Floor.PatchReadyMs.P50)
	b.results.Single = r
	logf("single: sent → scaled %s (%.2f× floor), sent → Ready %s (%.2f× floor), ready detect %s ms; Scaled reasons %v; CPU seconds %v",
		ms(r.SentScaledMs), r.ScaledRatioP50, ms(r.SentReadyMs), r.ReadyRatioP50, ms(r.ReadyDetectMs), reasons, r.CPUS)
	return nil
}

// burst runs, for each burst size, the one-PATCH floor and then the controller's burst.
func (b *bench) burst(ctx context.Context) error {
	for i, n := range b.cfg.burstSizes {
		floorNS, burstNS := fmt.Sprintf("zw-bench-burst-floor-%d", n), fmt.Sprintf("zw-bench-burst-%d", n)
		if err := b.burstFloor(ctx, floorNS, n); err != nil {
			return err
		}
		if err := drain(ctx, b.kube, b.scales, floorNS, names("bfloor", n), burstTimeout(n)); err != nil {
			return err
		}
		if err := b.burstOf(ctx, burstNS, n); err != nil {
			return err
		}
		// Pods first, by hand: the namespace controller deletes them one graceful round trip
		// at a time (half an hour for 10,000 here).
		if err := drain(ctx, b.kube, b.scales, burstNS, names("burst", n), burstTimeout(n)); err != nil {
			return err
		}
		// The targets are marked: left in place, the controller's inventory would carry them
		// into every later figure (the footprint's above all). The next burst waits for the
		// control plane to finish deleting them; the footprint, which measures memory rather
		// than time, only for the Deployments to be gone.
		last := i == len(b.cfg.burstSizes)-1
		if err := deleteNamespaces(ctx, b.kube, burstTimeout(n), last, floorNS, burstNS); err != nil {
			return err
		}
	}
	return nil
}

// burstOf creates ScaleRequests for n idle Deployments at once, and times them against the
// floor burstFloor just measured.
func (b *bench) burstOf(ctx context.Context, ns string, n int) error {
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	targets, tr, err := b.idleTargets(tctx, ns, "burst", n)
	if err != nil {
		return err
	}
	before, err := scrape(ctx, b.ctrl.Ops)
	if err != nil {
		return err
	}
	label := fmt.Sprintf("burst-%d", n)
	profileDone := b.cpuProfile(ctx, label, 20*time.Second)
	srs := b.zw.ZerowakeV1alpha1().ScaleRequests(ns)
	cpu0 := b.cpuSeconds()
	t0 := time.Now()
	sent := make([]time.Time, n)
	err = parallel(ctx, n, 100, func(ctx context.Context, i int) error {
		sent[i] = time.Now()
		_, err := srs.Create(ctx, scaleRequest(ns, targets[i]), metav1.CreateOptions{})
		return err
	})
	created := time.Since(t0)
	if err != nil {
		return fmt.Errorf("creating ScaleRequests: %w", err)
	}
	if err := tr.wait(ctx, burstTimeout(n), fmt.Sprintf("%d Deployments to be scaled", n), func(t *tracker) bool { return t.counts.specScaled >= n }); err != nil {
		return err
	}
	// Every target is being waited for now: the burst's memory peak.
	if peak, err := scrape(ctx, b.ctrl.Ops); err == nil {
		logf("burst %d: all scaled; controller rss %.1f MiB, heap in use %.1f MiB, stacks %.1f MiB, %v goroutines", n,
			metricValue(peak, "process_resident_memory_bytes")/(1<<20), metricValue(peak, "go_memstats_heap_inuse_bytes")/(1<<20),
			metricValue(peak, "go_memstats_stack_inuse_bytes")/(1<<20), metricValue(peak, "go_goroutines"))
	}
	b.saveProfile(ctx, "goroutine", label)
	b.saveProfile(ctx, "heap", label)
	if err := tr.wait(ctx, burstTimeout(n), fmt.Sprintf("%d ScaleRequests to be Ready", n), func(t *tracker) bool {
		return t.counts.condReady >= n && t.counts.deployReady >= n
	}); err != nil {
		return err
	}
	cpu := cpuDelta(cpu0, b.cpuSeconds())
	profileDone()
	if err := sleep(ctx, 2*time.Second); err != nil {
		return err
	}
	after, err := scrape(ctx, b.ctrl.Ops)
	if err != nil {
		return err
	}
	r := &b.results.Bursts[len(b.results.Bursts)-1]
	tr.mu.Lock()
	r.AllScaledS = round2(tr.last.specScaled.Sub(t0).Seconds())
	r.AllReadyS = round2(tr.last.condReady.Sub(t0).Seconds())
	r.DeploymentsReadyS = round2(tr.last.deployReady.Sub(t0).Seconds())
	r.Ready = tr.counts.condReady
	tr.mu.Unlock()
	r.WakeScaledMs = tr.scaledSince(targets, sent).percentiles()
	r.CreateS = round2(created.Seconds())
	r.ControllerRequests = requestDelta(apiRequests(before), apiRequests(after))
	r.RequestsPerWake = map[string]float64{}
	for k, v := range r.ControllerRequests {
		r.RequestsPerWake[k] = round2(v / float64(n))
	}
	r.CPUS = cpu
	r.PeakRSSMiB = peakRSSMiB(b.ctrl.Pid())
	r.ScaledPerS = round2(float64(n) / r.AllScaledS)
	r.ScaledRatio = ratio(r.AllScaledS, r.FloorAllScaledS)
	r.ReadyRatio = ratio(r.AllReadyS, r.FloorAllReadyS)
	logf("burst %d: all scaled %.2fs (%.2f× floor), all Ready %.2fs (%.2f× floor); each wake sent → scaled %s ms (floor %s); creates took %.2fs, deployments ready %.2fs; controller peak RSS %.1f MiB; controller requests %v; CPU seconds %v",
		n, r.AllScaledS, r.ScaledRatio, r.AllReadyS, r.ReadyRatio, ms(r.WakeScaledMs), ms(r.FloorWakeScaledMs), r.CreateS, r.DeploymentsReadyS, r.PeakRSSMiB, r.ControllerRequests, r.CPUS)
	return nil
}

// countingTransport counts the wake client's writes to ScaleRequests.
type countingTransport struct {
	next   http.RoundTripper
	writes *atomic.Int64
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet && strings.Contains(req.URL.Path, "/scalerequests") {
		t.writes.Add(1)
	}
	return t.next.RoundTrip(req)
}

// herd sends many Wake calls for one idle Deployment through the wake client.
func (b *bench) herd(ctx context.Context) error {
	const ns, name = "zw-bench-herd", "herd"
	calls, workers := b.cfg.herdCalls, b.cfg.herdWorkers
	if err := createNamespace(ctx, b.kube, ns); err != nil {
		return err
	}
	if err := createDeployments(ctx, b.kube, ns, []string{name}, 0); err != nil {
		return err
	}
	var crWrites atomic.Int64
	cfg := rest.CopyConfig(b.admin)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &countingTransport{next: rt, writes: &crWrites} })
	client, err := wake.NewForConfig(cfg, wake.Options{Namespace: ns})
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := client.Start(wctx); err != nil {
		return err
	}
	defer client.Stop()
	before, err := scrape(ctx, b.ctrl.Ops)
	if err != nil {
		return err
	}

	target := wake.Deployment(ns, name)
	var mu sync.Mutex
	actions := map[string]int{}
	start := time.Now()
	err = parallel(wctx, workers, workers, func(ctx context.Context, _ int) error {
		local := map[string]int{}
		for range calls / workers {
			a, err := client.Wake(ctx, target)
			if err != nil {
				return err
			}
			local[a.String()]++
		}
		mu.Lock()
		for k, v := range local {
			actions[k] += v
		}
		mu.Unlock()
		return nil
	})
	callsTook := time.Since(start)
	if err != nil {
		return fmt.Errorf("wake: %w", err)
	}
	if _, err := client.WaitReady(wctx, target); err != nil {
		return fmt.Errorf("waiting for readiness: %w", err)
	}
	ready := time.Since(start)
	// Anything the controller would still write comes within a moment.
	if err := sleep(ctx, 3*time.Second); err != nil {
		return err
	}
	after, err := scrape(ctx, b.ctrl.Ops)
	if err != nil {
		return err
	}
	delta := requestDelta(apiRequests(before), apiRequests(after))
	r := Herd{
		WakeCalls: workers * (calls / workers), Goroutines: workers, Actions: actions,
		CRWrites:           int(crWrites.Load()),
		ScaleWrites:        int(writesIn(delta, func(_, res string) bool { return res == "deployments/scale" })),
		StatusWrites:       int(writesIn(delta, func(_, res string) bool { return res == "scalerequests/status" })),
		CallsMs:            round2(float64(callsTook) / float64(time.Millisecond)),
		ReadyMs:            round2(float64(ready) / float64(time.Millisecond)),
		ControllerRequests: delta,
	}
	b.results.Herd = r
	logf("herd: %d calls in %.1fms, ready after %.1fms; writes: ScaleRequest %d, scale %d, status %d; actions %v; controller requests %v",
		r.WakeCalls, r.CallsMs, r.ReadyMs, r.CRWrites, r.ScaleWrites, r.StatusWrites, actions, delta)
	return nil
}

// footprint measures the controller's memory with no ScaleRequests, with many settled ones,
// and with as many unrelated Deployments added; then its API writes while idle.
func (b *bench) footprint(ctx context.Context) error {
	const srNS, deployNS = "zw-bench-srs", "zw-bench-idle"
	r := Footprint{ScaleRequests: b.cfg.fpSRs, Deployments: b.cfg.fpDeploys, Readings: map[string]memReading{}}

	// The controller that served scenarios 2 to 4, for what it keeps after them.
	if b.ctrl != nil {
		m, err := b.readMemory(ctx, "after_scenarios")
		if err != nil {
			return err
		}
		r.Readings["after_scenarios"] = m
	}

	// 0 ScaleRequests: remove those of the other scenarios, then start afresh.
	b.stopController()
	left, err := b.zw.ZerowakeV1alpha1().ScaleRequests("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	namespaces := map[string]bool{}
	for _, sr := range left.Items {
		namespaces[sr.Namespace] = true
	}
	for ns := range namespaces {
		if err := b.zw.ZerowakeV1alpha1().ScaleRequests(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
			return err
		}
	}
	if err := poll(ctx, 2*time.Minute, 200*time.Millisecond, "every ScaleRequest to be deleted", func(ctx context.Context) (bool, error) {
		list, err := b.zw.ZerowakeV1alpha1().ScaleRequests("").List(ctx, metav1.ListOptions{Limit: 1})
		return err == nil && len(list.Items) == 0, err
	}); err != nil {
		return err
	}
	if err := b.startController(ctx); err != nil {
		return err
	}
	m0, err := b.readMemory(ctx, "0")
	if err != nil {
		return err
	}
	r.Readings["0"] = m0

	// N settled (Ready) ScaleRequests, as a cluster holds after N workloads have been woken
	// once. They are written with the controller stopped, so that it finds them at start-up.
	b.stopController()
	if err := createNamespace(ctx, b.kube, srNS); err != nil {
		return err
	}
	t := time.Now()
	srs := b.zw.ZerowakeV1alpha1().ScaleRequests(srNS)
	err = parallel(ctx, b.cfg.fpSRs, 48, func(ctx context.Context, i int) error {
		name := fmt.Sprintf("app-%05d", i)
		sr, err := srs.Create(ctx, scaleRequest(srNS, name), metav1.CreateOptions{})
		if err != nil {
			return err
		}
		sr.Status = readyStatus(sr, name)
		_, err = srs.UpdateStatus(ctx, sr, metav1.UpdateOptions{FieldManager: "zerowake-controller"})
		return err
	})
	if err != nil {
		return fmt.Errorf("creating ScaleRequests: %w", err)
	}
	logf("footprint: %d Ready ScaleRequests written in %s", b.cfg.fpSRs, time.Since(t).Round(time.Millisecond))
	if err := b.startController(ctx); err != nil {
		return err
	}
	m10k, err := b.readMemory(ctx, "10k")
	if err != nil {
		return err
	}
	r.Readings["10k"] = m10k

	// N unrelated idle Deployments.
	t = time.Now()
	if err := createNamespace(ctx, b.kube, deployNS); err != nil {
		return err
	}
	// Not waiting for the deployment controller to catch up (it creates a ReplicaSet for each):
	// what is measured is this controller, which should not even notice.
	if err := createDeploymentsNoWait(ctx, b.kube, deployNS, names("idle", b.cfg.fpDeploys), 0, false); err != nil {
		return err
	}
	logf("footprint: %d Deployments created in %s", b.cfg.fpDeploys, time.Since(t).Round(time.Millisecond))
	m10kd, err := b.readMemory(ctx, "10k_deploys")
	if err != nil {
		return err
	}
	r.Readings["10k_deploys"] = m10kd
	r.RSSMiB0, r.HeapMiB0 = m0.RSSMiB, m0.HeapMiB
	r.RSSMiB10k, r.HeapMiB10k = m10k.RSSMiB, m10k.HeapMiB
	r.RSSMiB10kDeploys, r.HeapMiB10kDeploys = m10kd.RSSMiB, m10kd.HeapMiB
	r.RSSGrowthPct10kDeploys = round2((m10kd.RSSMiB - m10k.RSSMiB) / m10k.RSSMiB * 100)

	// Idle writes.
	before, err := scrape(ctx, b.ctrl.Ops)
	if err != nil {
		return err
	}
	if err := sleep(ctx, b.cfg.idleWindow); err != nil {
		return err
	}
	after, err := scrape(ctx, b.ctrl.Ops)
	if err != nil {
		return err
	}
	delta := requestDelta(apiRequests(before), apiRequests(after))
	perMin := time.Minute.Seconds() / b.cfg.idleWindow.Seconds()
	r.IdleWindowS = b.cfg.idleWindow.Seconds()
	r.IdleRequests = delta
	r.IdleWritesPerMin = round2(writesIn(delta, nil) * perMin)
	r.IdleWritesPerMinExclLease = round2(writesIn(delta, func(_, res string) bool { return res != "leases" }) * perMin)
	b.results.Footprint = r
	logf("footprint: idle over %s: %v", b.cfg.idleWindow, delta)
	return nil
}

// readyStatus is the status the controller writes when a request's target is ready.
func readyStatus(sr *v1alpha1.ScaleRequest, name string) v1alpha1.ScaleRequestStatus {
	now := metav1.Now()
	return v1alpha1.ScaleRequestStatus{
		ObservedGeneration: sr.Generation, Phase: v1alpha1.PhaseReady, PreviousReplicas: ptr.To[int32](0),
		Replicas: 1, ReadyReplicas: 1, LastScaleTime: &now, ReadyTime: &now,
		ColdStartDuration: &metav1.Duration{Duration: 250 * time.Millisecond},
		Conditions: []metav1.Condition{
			{Type: v1alpha1.ConditionScaled, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonScaledFromZero,
				Message: "Scaled Deployment/" + name + " from 0 to 1 replicas", ObservedGeneration: sr.Generation, LastTransitionTime: now},
			{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonTargetReady,
				Message: "Deployment/" + name + " has 1/1 ready replicas, 250ms after the signal", ObservedGeneration: sr.Generation, LastTransitionTime: now},
		},
	}
}

// sustained creates ScaleRequests for distinct idle Deployments at a steady rate for a while,
// so that earlier targets become ready while new signals keep arriving, and times, for each
// request seen ready before the last create was sent, its controller's readiness sighting
// (status.readyTime) to the Ready status write's arrival on this process's watch.
func (b *bench) sustained(ctx context.Context) error {
	const ns, rate = "zw-bench-sustained", 20.0
	duration := 40 * time.Second
	if b.cfg.quick {
		duration = 20 * time.Second
	}
	n := int(rate * duration.Seconds())
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	targets, tr, err := b.idleTargets(tctx, ns, "steady", n)
	if err != nil {
		return err
	}
	srs := b.zw.ZerowakeV1alpha1().ScaleRequests(ns)
	start := time.Now()
	var lastSent time.Time
	for i, name := range targets {
		if err := sleep(ctx, time.Until(start.Add(time.Duration(float64(i)/rate*float64(time.Second))))); err != nil {
			return err
		}
		lastSent = time.Now()
		// Each create on its own goroutine, so that a slow answer does not slow the rate.
		go func() {
			cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
			defer ccancel()
			if _, err := srs.Create(cctx, scaleRequest(ns, name), metav1.CreateOptions{}); err != nil {
				logf("sustained: create %s: %v", name, err)
			}
		}()
	}
	if err := tr.wait(ctx, 5*time.Minute, fmt.Sprintf("%d ScaleRequests to be Ready", n), func(t *tracker) bool { return t.counts.condReady >= n }); err != nil {
		return err
	}
	var written samples
	for _, name := range targets {
		e := tr.get(name)
		if e.readySeen.IsZero() || !e.readySeen.Before(lastSent) {
			continue
		}
		written = append(written, e.condReady.Sub(e.readySeen))
	}
	r := &Sustained{RatePerS: rate, DurationS: duration.Seconds(), N: n, SeenDuring: len(written), ReadyWrittenMs: written.percentiles()}
	b.results.Sustained = r
	logf("sustained: %d requests at %.0f/s; for the %d seen ready while requests arrived, readiness seen -> Ready written %s ms",
		n, rate, r.SeenDuring, ms(r.ReadyWrittenMs))
	if err := drain(ctx, b.kube, b.scales, ns, targets, 5*time.Minute); err != nil {
		return err
	}
	return deleteNamespaces(ctx, b.kube, 5*time.Minute, true, ns)
}
