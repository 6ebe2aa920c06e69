package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/zerowake/zerowake/gate"
	"github.com/zerowake/zerowake/wake"
)

// Gate: the wake gate, in this process, over a wake client on the benchmark's control plane.
type Gate struct {
	// AwakeInProcessUs is the gate's answer for a Ready target, handler called directly
	// (route parsing, decision, answer written), in microseconds; AwakeHTTPUs the same over a
	// keep-alive loopback HTTP round trip, as a proxy would call it.
	AwakeN           int         `json:"awake_n"`
	AwakeInProcessUs Percentiles `json:"awake_in_process_us"`
	AwakeHTTPUs      Percentiles `json:"awake_http_us"`
	// AwakeAPIRequests are the wake client's API requests during all the awake answers
	// (in-process, over HTTP and through Caddy).
	AwakeAPIRequests int `json:"awake_api_requests"`
	// ProxiedUs is a request through Caddy whose route asks the gate (forward_auth) about the
	// awake target, to a loopback backend; ProxyOnlyUs the same through Caddy with no gate.
	ProxiedUs   Percentiles `json:"proxied_us"`
	ProxyOnlyUs Percentiles `json:"proxy_only_us"`
	// Load is the awake target's requests through each proxy path at several concurrencies
	// (see gateload.go); NginxSkipped says why the nginx paths are missing.
	Load         []ProxyLoad `json:"load"`
	NginxSkipped string      `json:"nginx_skipped,omitempty"`
	// HeldMs is from the call sent to the answer received for an idle target; OverheadMs is
	// from the target's Deployment being seen ready (by this process's watch) to the answer:
	// what the controller's status write, the gate's informer and the answer add.
	HeldN      int         `json:"held_n"`
	HeldMs     Percentiles `json:"held_ms"`
	OverheadMs Percentiles `json:"overhead_ms"`
	// Herd: calls held at once for one idle target, the ScaleRequest writes they cost and how
	// many were let through.
	HerdCalls    int     `json:"herd_calls"`
	HerdCRWrites int     `json:"herd_cr_writes"`
	HerdPassed   int     `json:"herd_passed"`
	HerdReadyMs  float64 `json:"herd_ready_ms"`
	// HeldKiB is the gate's memory (heap and goroutine stacks) per call held for a target that
	// does not become ready, with the handler called directly: a server's per-connection
	// buffers come on top.
	HeldKiB float64 `json:"held_kib_per_call"`
}

// gateScenario measures the gate's answer for an awake target, its overhead on a held one, a
// herd of held calls and the memory each costs.
func (b *bench) gateScenario(ctx context.Context) error {
	const ns = "zw-bench-gate"
	if err := createNamespace(ctx, b.kube, ns); err != nil {
		return err
	}
	awakeN, heldN, herdN, loadN := 20000, 50, 10000, 20000
	if b.cfg.quick {
		awakeN, heldN, loadN = 5000, 20, 2000
	}
	held := names("held", heldN)
	if err := b.createOptedIn(ctx, ns, append([]string{"awake", "herd"}, held...), false); err != nil {
		return err
	}
	if err := b.createOptedIn(ctx, ns, []string{"stuck"}, true); err != nil {
		return err
	}
	tctx, tcancel := context.WithCancel(ctx)
	defer tcancel()
	tr, err := newTracker(tctx, b.kube, b.zw, ns, 1)
	if err != nil {
		return err
	}

	var requests, crWrites atomic.Int64
	cfg := rest.CopyConfig(b.admin)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			requests.Add(1)
			if req.Method == http.MethodPost || req.Method == http.MethodPatch {
				crWrites.Add(1)
			}
			return rt.RoundTrip(req)
		})
	})
	client, err := wake.NewForConfig(cfg, wake.Options{Namespace: ns})
	if err != nil {
		return err
	}
	if err := client.Start(tctx); err != nil {
		return err
	}
	defer client.Stop()
	g := gate.New(client, gate.Config{Timeout: 60 * time.Second}, nil, logr.Discard())
	handler := g.Handler()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	server := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = server.Serve(listener) }()
	defer server.Close()
	base := "http://" + listener.Addr().String() + gate.PathAuth + "?target=" + ns + "/deployment/"
	httpc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100}}
	call := func(ctx context.Context, name string) (int, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+name, nil)
		if err != nil {
			return 0, err
		}
		resp, err := httpc.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	r := Gate{AwakeN: awakeN, HeldN: heldN, HerdCalls: herdN}

	// Awake: wake the target once, then time answers for it.
	if code, err := call(ctx, "awake"); err != nil || code != http.StatusOK {
		return fmt.Errorf("waking the awake target: %d %v", code, err)
	}
	req := httptest.NewRequest(http.MethodGet, base+"awake", nil)
	inProcess, overHTTP := make(samples, 0, awakeN), make(samples, 0, awakeN)
	before := requests.Load()
	for range awakeN {
		rec := httptest.NewRecorder()
		t0 := time.Now()
		handler.ServeHTTP(rec, req)
		inProcess = append(inProcess, time.Since(t0))
		if rec.Code != http.StatusOK {
			return fmt.Errorf("awake answer %d", rec.Code)
		}
	}
	for range awakeN {
		t0 := time.Now()
		code, err := call(ctx, "awake")
		overHTTP = append(overHTTP, time.Since(t0))
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("awake answer over HTTP: %d %v", code, err)
		}
	}
	r.AwakeInProcessUs, r.AwakeHTTPUs = micros(inProcess), micros(overHTTP)
	if err := b.throughProxies(ctx, &r, listener.Addr().String(), ns, awakeN/4, loadN); err != nil {
		return err
	}
	r.AwakeAPIRequests = int(requests.Load() - before)

	// Held: one idle target at a time, from the call to the answer; the overhead starts when
	// the Deployment is seen ready.
	heldMs, overheadMs := make(samples, 0, heldN), make(samples, 0, heldN)
	for _, name := range held {
		t0 := time.Now()
		code, err := call(ctx, name)
		answered := time.Now()
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("held call for %s: %d %v", name, code, err)
		}
		ready := tr.get(name).deployReady
		if ready.IsZero() {
			// The watch may deliver the Deployment's event just after the answer.
			if err := tr.wait(ctx, 10*time.Second, name+" seen ready", func(t *tracker) bool {
				e := t.byName[name]
				return e != nil && !e.deployReady.IsZero()
			}); err != nil {
				return err
			}
			ready = tr.get(name).deployReady
		}
		heldMs = append(heldMs, answered.Sub(t0))
		overheadMs = append(overheadMs, answered.Sub(ready))
	}
	r.HeldMs, r.OverheadMs = heldMs.percentiles(), overheadMs.percentiles()

	// Herd: calls held at once for one idle target (the handler called directly, as many as
	// the default cap admits).
	writes0 := crWrites.Load()
	var passed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range herdN {
		wg.Go(func() {
			rec := httptest.NewRecorder()
			handler.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodGet, base+"herd", nil))
			if rec.Code == http.StatusOK {
				passed.Add(1)
			}
		})
	}
	wg.Wait()
	r.HerdReadyMs = round2(float64(time.Since(start)) / float64(time.Millisecond))
	r.HerdCRWrites, r.HerdPassed = int(crWrites.Load()-writes0), int(passed.Load())

	// Memory per held call: hold as many for a target that never becomes ready, read the
	// heap and stacks while they are all held, then let them go.
	hctx, release := context.WithCancel(ctx)
	stuck, _ := gate.ParseTarget(ns + "/deployment/stuck")
	m0 := heapAndStacks()
	for range herdN {
		wg.Go(func() {
			handler.ServeHTTP(httptest.NewRecorder(), httptest.NewRequestWithContext(hctx, http.MethodGet, base+"stuck", nil))
		})
	}
	err = poll(ctx, 60*time.Second, 10*time.Millisecond, "every call for the stuck target to be held", func(context.Context) (bool, error) {
		return g.Held(stuck) == herdN, nil
	})
	m1 := heapAndStacks()
	release()
	wg.Wait()
	if err != nil {
		return err
	}
	r.HeldKiB = round2(float64(m1-m0) / float64(herdN) / 1024)

	b.results.Gate = &r
	logf("gate: awake in-process %v µs, over HTTP %v µs, through Caddy %v µs (Caddy alone %v µs) (%d API requests); held %v ms, overhead %v ms; herd of %d: %d ScaleRequest writes, %d passed in %.0f ms; %.1f KiB per held call",
		r.AwakeInProcessUs, r.AwakeHTTPUs, r.ProxiedUs, r.ProxyOnlyUs, r.AwakeAPIRequests, r.HeldMs, r.OverheadMs, herdN, r.HerdCRWrites, r.HerdPassed, r.HerdReadyMs, r.HeldKiB)
	return nil
}

// throughProxies times n requests one at a time through Caddy with a forward_auth call to the
// gate for the awake target, and n through Caddy alone, both to a loopback backend; then the
// load runs, loadN requests for each path and concurrency, nginx's too when there is one.
func (b *bench) throughProxies(ctx context.Context, r *Gate, gateAddress, ns string, n, loadN int) error {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	defer backend.Close()
	upstream := strings.TrimPrefix(backend.URL, "http://")
	sites, stopCaddy, err := b.startBenchCaddy(ctx, gateAddress, ns, upstream)
	if err != nil {
		return err
	}
	defer stopCaddy()
	if r.ProxiedUs, err = oneAtATime(sites["caddy+gate"], n); err != nil {
		return err
	}
	if r.ProxyOnlyUs, err = oneAtATime(sites["caddy"], n); err != nil {
		return err
	}
	paths := []string{"caddy+gate", "caddy"}
	if binary, err := nginxBinary(); err != nil {
		r.NginxSkipped = err.Error()
	} else {
		nginxSites, stopNginx, err := b.startBenchNginx(ctx, binary, gateAddress, ns, upstream)
		if err != nil {
			return err
		}
		defer stopNginx()
		maps.Copy(sites, nginxSites)
		paths = append(paths, "nginx+gate+cache", "nginx+gate", "nginx")
	}
	if r.Load, err = proxyLoad(ctx, paths, sites, loadN); err != nil {
		return err
	}
	for _, l := range r.Load {
		logf("gate: %s with %d clients: %.0f req/s, latency %v µs", l.Path, l.Concurrency, l.RPS, l.LatencyUs)
	}
	if r.NginxSkipped != "" {
		logf("gate: nginx paths not measured: %s", r.NginxSkipped)
	}
	return nil
}

// oneAtATime times n requests to url sent one after another, after 100 that warm up.
func oneAtATime(url string, n int) (Percentiles, error) {
	httpc := &http.Client{}
	times := make(samples, 0, n)
	for j := range n + 100 {
		t0 := time.Now()
		resp, err := httpc.Get(url)
		if err != nil {
			return Percentiles{}, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return Percentiles{}, fmt.Errorf("%s: %d", url, resp.StatusCode)
		}
		if j >= 100 { // the first requests warm up connections
			times = append(times, time.Since(t0))
		}
	}
	return micros(times), nil
}

// createOptedIn creates idle Deployments labelled as their owner allows waking them;
// neverReady ones have pods no node takes.
func (b *bench) createOptedIn(ctx context.Context, ns string, targets []string, neverReady bool) error {
	if err := parallel(ctx, len(targets), 32, func(ctx context.Context, i int) error {
		d := deployment(ns, targets[i], 0)
		d.Labels = map[string]string{gate.OptInLabel: "true"}
		if neverReady {
			d.Spec.Template.Spec.NodeSelector = map[string]string{"zerowake.bench/no-such-node": "true"}
		}
		_, err := b.kube.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
		return err
	}); err != nil {
		return err
	}
	return nil
}

func heapAndStacks() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// micros gives percentiles in microseconds (percentiles rounds milliseconds to 10 µs).
func micros(s samples) Percentiles {
	us := make(samples, len(s))
	for i, d := range s {
		us[i] = d * 1000 // so that ms() reads microseconds
	}
	return us.percentiles()
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// gateRows adds the gate's rows to the table.
func gateRows(r *Results, add func(metric, value, target string, met *bool)) {
	g := r.Gate
	if g == nil {
		add("gate", "not run", "", nil)
		return
	}
	us := func(p Percentiles) string { return fmt.Sprintf("%.0f / %.0f / %.0f", p.P50, p.P90, p.P99) }
	add(fmt.Sprintf("gate.awake_in_process_µs p50/p90/p99 (n=%d)", g.AwakeN), us(g.AwakeInProcessUs), "p99 < 1000", check(g.AwakeInProcessUs.P99 < 1000))
	add("gate.awake_http_µs (loopback round trip)", us(g.AwakeHTTPUs), "", nil)
	add("gate.proxied_µs (Caddy + forward_auth to the gate)", us(g.ProxiedUs), "", nil)
	add("gate.proxy_only_µs (Caddy alone, same backend)", us(g.ProxyOnlyUs), "", nil)
	loadRows(g, add)
	add("gate.awake_api_requests", fmt.Sprint(g.AwakeAPIRequests), "0", check(g.AwakeAPIRequests == 0))
	add(fmt.Sprintf("gate.held_ms (idle target, n=%d)", g.HeldN), ms(g.HeldMs), "", nil)
	add("gate.overhead_ms (Deployment ready → answer)", ms(g.OverheadMs), "", nil)
	add(fmt.Sprintf("gate.herd_cr_writes (%d held at once)", g.HerdCalls), fmt.Sprint(g.HerdCRWrites), "≤ 1", check(g.HerdCRWrites <= 1))
	add("gate.herd_passed", fmt.Sprint(g.HerdPassed), fmt.Sprint(g.HerdCalls), check(g.HerdPassed == g.HerdCalls))
	add("gate.held_kib_per_call (heap + stacks)", fmt.Sprintf("%.1f", g.HeldKiB), "", nil)
}
