package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	discoveryinformers "k8s.io/client-go/informers/discovery/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/zerowake/zerowake/gate"
	"github.com/zerowake/zerowake/wake"
)

// Endpoints: the gate, in this process, serving routes that name the Service their proxy sends
// to, on a control plane holding many EndpointSlices of other Services, half of them in a
// namespace it does not serve. It follows only the routes' Services, so what it holds and
// receives should not grow with the cluster's slices; a cluster-wide EndpointSlice informer
// is measured the same way for comparison.
type Endpoints struct {
	// Slices were created before the gate started, SlicesServed of them in its namespace.
	Slices       int `json:"slices"`
	SlicesServed int `json:"slices_in_served_namespace"`
	Routes       int `json:"routes"`
	// FollowedServices is how many Services the gate followed once every route was served.
	FollowedServices int `json:"followed_services"`
	// GateHeapMiB is the growth of this process's heap in use (after a GC) from before the gate
	// and its wake client started until every route had been served; RSSMiBBefore and
	// RSSMiBAfter are this process's resident set at the same moments (the benchmark's own
	// clients included).
	GateHeapMiB  float64 `json:"gate_heap_mib"`
	RSSMiBBefore float64 `json:"rss_mib_before"`
	RSSMiBAfter  float64 `json:"rss_mib_after"`
	// GateRequests are the API requests of the gate (wake client and EndpointSlice follower)
	// during the scenario, by "VERB resource"; SlicesReceived the EndpointSlices its informers
	// received (listed or watched).
	GateRequests   map[string]int `json:"gate_requests"`
	SlicesReceived int64          `json:"slices_received"`
	// AwakeCalls calls on routable routes made AwakeAPIRequests API requests.
	AwakeCalls       int `json:"awake_calls"`
	AwakeAPIRequests int `json:"awake_api_requests"`
	// NotServedStatus is the answer to a route naming a Service in a namespace the gate does
	// not serve (400, and nothing read).
	NotServedStatus int `json:"not_served_status"`
	// ClusterWideHeapMiB and ClusterWideReceived: the same heap growth, and the slices
	// received, for one informer over every EndpointSlice in the cluster.
	ClusterWideHeapMiB  float64 `json:"cluster_wide_heap_mib"`
	ClusterWideReceived int     `json:"cluster_wide_received"`
}

// endpointsScenario creates 10,000 EndpointSlices (3 ready endpoints each, 5 slices a Service)
// in a namespace the gate serves and one it does not, then serves a few routes naming Services
// there and measures what the gate holds and reads.
func (b *bench) endpointsScenario(ctx context.Context) error {
	const served, other, slices, perService, routes = "zw-bench-ep", "zw-bench-ep-other", 10000, 5, 3
	for _, ns := range []string{served, other} {
		if err := createNamespace(ctx, b.kube, ns); err != nil {
			return err
		}
	}
	defer func() {
		if err := deleteNamespaces(context.WithoutCancel(ctx), b.kube, 3*time.Minute, false, served, other); err != nil {
			logf("endpoints: cleanup: %v", err)
		}
	}()
	t := time.Now()
	if err := parallel(ctx, slices, 32, func(ctx context.Context, i int) error {
		ns := served
		if i%2 == 1 {
			ns = other
		}
		_, err := b.kube.DiscoveryV1().EndpointSlices(ns).Create(ctx, benchSlice(ns, i/2, perService), metav1.CreateOptions{})
		return err
	}); err != nil {
		return err
	}
	logf("endpoints: created %d EndpointSlices in %s", slices, time.Since(t).Round(time.Millisecond))
	targets := names("ep", routes)
	if err := b.createOptedIn(ctx, served, targets, false); err != nil {
		return err
	}
	r := Endpoints{Slices: slices, SlicesServed: slices / 2, Routes: routes, AwakeCalls: 1000}

	requests := map[string]int{}
	var requestsMu sync.Mutex
	cfg := rest.CopyConfig(b.admin)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			key := requestKind(req)
			requestsMu.Lock()
			requests[key]++
			requestsMu.Unlock()
			return rt.RoundTrip(req)
		})
	})
	countRequests := func() int {
		requestsMu.Lock()
		defer requestsMu.Unlock()
		n := 0
		for _, v := range requests {
			n += v
		}
		return n
	}
	sliceCfg := rest.CopyConfig(cfg)
	sliceCfg.ContentType = "application/vnd.kubernetes.protobuf"
	kube, err := kubernetes.NewForConfig(sliceCfg)
	if err != nil {
		return err
	}

	heap0, rss0 := heapInUse(), selfRSSMiB()
	client, err := wake.NewForConfig(cfg, wake.Options{Namespace: served})
	if err != nil {
		return err
	}
	if err := client.Start(ctx); err != nil {
		return err
	}
	defer client.Stop()
	watcher := gate.NewEndpointWatcher(kube, gate.EndpointWatcherOptions{Namespaces: []string{served}})
	defer watcher.Stop()
	handler := gate.New(client, gate.Config{Timeout: 60 * time.Second, Endpoints: watcher}, nil, logr.Discard()).Handler()
	call := func(ctx context.Context, query string) int {
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodGet, gate.PathAuth+"?"+query, nil))
		return rec.Code
	}
	route := func(i int) string {
		return fmt.Sprintf("target=%s/deployment/%s&service=%s/%s", served, targets[i], served, benchService(i))
	}
	// Each route wakes its target and is held until its Service lists ready endpoints.
	for i := range routes {
		if code := call(ctx, route(i)); code != http.StatusOK {
			return fmt.Errorf("route %d: %d", i, code)
		}
	}
	r.NotServedStatus = call(ctx, fmt.Sprintf("target=%s/deployment/%s&service=%s/%s", served, targets[0], other, benchService(0)))
	before := countRequests()
	for i := range r.AwakeCalls {
		if code := call(ctx, route(i%routes)); code != http.StatusOK {
			return fmt.Errorf("awake call on route %d: %d", i%routes, code)
		}
	}
	r.AwakeAPIRequests = countRequests() - before
	r.GateHeapMiB, r.RSSMiBBefore, r.RSSMiBAfter = mib(heapInUse()-heap0), rss0, selfRSSMiB()
	r.FollowedServices, r.SlicesReceived = watcher.Followed(), watcher.Received()
	requestsMu.Lock()
	r.GateRequests = requests
	requestsMu.Unlock()

	// For comparison: one informer over every EndpointSlice, as a gate watching the whole
	// cluster would hold.
	heap1 := heapInUse()
	wideCtx, stopWide := context.WithCancel(ctx)
	wide := discoveryinformers.NewEndpointSliceInformer(b.kube, "", 0, cache.Indexers{})
	go wide.RunWithContext(wideCtx)
	if !cache.WaitForCacheSync(ctx.Done(), wide.HasSynced) {
		stopWide()
		return ctx.Err()
	}
	r.ClusterWideHeapMiB, r.ClusterWideReceived = mib(heapInUse()-heap1), len(wide.GetStore().ListKeys())
	stopWide()

	b.results.Endpoints = &r
	logf("endpoints: %d slices (%d served); %d routes: gate heap +%.1f MiB (RSS %.1f → %.1f MiB), %d Services followed, %d slices received, requests %v; %d awake calls: %d API requests; a Service not served: %d; a cluster-wide informer: heap +%.1f MiB, %d slices",
		r.Slices, r.SlicesServed, r.Routes, r.GateHeapMiB, r.RSSMiBBefore, r.RSSMiBAfter, r.FollowedServices, r.SlicesReceived, r.GateRequests,
		r.AwakeCalls, r.AwakeAPIRequests, r.NotServedStatus, r.ClusterWideHeapMiB, r.ClusterWideReceived)
	return nil
}

func benchService(i int) string { return fmt.Sprintf("svc-%04d", i) }

// benchSlice is the i-th slice of a namespace: slice i%perService of Service i/perService,
// with 3 ready endpoints, shaped as the EndpointSlice controller writes them but managed by
// the benchmark (the controller leaves slices it does not manage alone).
func benchSlice(ns string, i, perService int) *discoveryv1.EndpointSlice {
	service := benchService(i / perService)
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("%s-%d", service, i%perService), Labels: map[string]string{
			discoveryv1.LabelServiceName: service, discoveryv1.LabelManagedBy: "zerowake-bench",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for j := range 3 {
		n := 3*i + j
		pod := fmt.Sprintf("%s-%d-%d", service, i%perService, j)
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", n>>16&255, n>>8&255, n&255)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
			NodeName:   ptr.To("kwok-node-0"),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod},
		})
	}
	return s
}

// requestKind names an API request "VERB resource", with LIST and WATCH told from GET.
func requestKind(req *http.Request) string {
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	resource := parts[len(parts)-1]
	verb := req.Method
	// /api/v1/namespaces/ns/kind/name or /apis/group/version/namespaces/ns/kind/name: a name
	// follows the resource when the path has an odd number of parts after the version.
	base := 2
	if parts[0] == "apis" {
		base = 3
	}
	named := (len(parts)-base)%2 == 0
	if named {
		resource = parts[len(parts)-2]
	}
	switch {
	case req.URL.Query().Get("watch") == "true":
		verb = "WATCH"
	case verb == http.MethodGet && !named:
		verb = "LIST"
	}
	return verb + " " + resource
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

func mib(bytes uint64) float64 {
	if int64(bytes) < 0 { // the heap shrank
		return 0
	}
	return round2(float64(bytes) / (1 << 20))
}

// selfRSSMiB reads this process's resident set from /proc/self/statm (pages).
func selfRSSMiB() float64 {
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseFloat(f[1], 64)
	return round2(pages * float64(os.Getpagesize()) / (1 << 20))
}

// endpointsRows adds the endpoints scenario's rows to the table.
func endpointsRows(r *Results, add func(metric, value, target string, met *bool)) {
	e := r.Endpoints
	if e == nil {
		add("endpoints", "not run", "", nil)
		return
	}
	requests := make([]string, 0, len(e.GateRequests))
	for k, v := range e.GateRequests {
		requests = append(requests, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(requests)
	add(fmt.Sprintf("endpoints.gate_heap_mib (%d slices, %d served; %d routes)", e.Slices, e.SlicesServed, e.Routes),
		fmt.Sprintf("%.1f", e.GateHeapMiB), "", nil)
	add("endpoints.rss_mib before → after (this process)", fmt.Sprintf("%.1f → %.1f", e.RSSMiBBefore, e.RSSMiBAfter), "", nil)
	add("endpoints.slices_received / followed Services", fmt.Sprintf("%d / %d", e.SlicesReceived, e.FollowedServices),
		fmt.Sprintf("≤ %d", 5*e.Routes), check(e.SlicesReceived <= int64(5*e.Routes)))
	add("endpoints.gate_requests", strings.Join(requests, ", "), "", nil)
	add(fmt.Sprintf("endpoints.awake_api_requests (%d calls)", e.AwakeCalls), fmt.Sprint(e.AwakeAPIRequests), "0", check(e.AwakeAPIRequests == 0))
	add("endpoints.not_served_status", fmt.Sprint(e.NotServedStatus), "400", check(e.NotServedStatus == http.StatusBadRequest))
	add("endpoints.cluster_wide_informer heap MiB / slices (comparison)", fmt.Sprintf("%.1f / %d", e.ClusterWideHeapMiB, e.ClusterWideReceived), "", nil)
}
