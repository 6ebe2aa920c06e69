package gate

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	discoveryinformers "k8s.io/client-go/informers/discovery/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/zerowake/zerowake/wake"
)

// Endpoints follows the ready endpoints of the Services routes name (*EndpointWatcher
// implements it). Errors: wake.ErrNamespaceNotWatched for a Service in a namespace the gate
// does not serve, ErrTooManyServices past the cap of followed Services, wake.ErrStopped once
// stopped.
type Endpoints interface {
	// Ready returns what the Service's EndpointSlices list now, as the cache shows it; the first
	// call for a Service starts following it (the answer is then empty until its cache fills).
	Ready(s ServiceRef) (EndpointCount, error)
	// WaitReady blocks until the Service's slices list at least s.MinReady ready endpoints and
	// returns the last count it saw, with ctx.Err() when ctx ends first.
	WaitReady(ctx context.Context, s ServiceRef) (EndpointCount, error)
}

// EndpointCount is what a Service's EndpointSlices list.
type EndpointCount struct {
	// Ready counts distinct ready endpoints (see readyEndpoints).
	Ready int
	// Slices counts the Service's EndpointSlices.
	Slices int
}

// ErrTooManyServices: following one more Service would pass EndpointWatcherOptions.MaxServices.
var ErrTooManyServices = errors.New("the gate already follows as many Services as it may (see --max-watched-services)")

// Defaults of EndpointWatcherOptions.
const (
	DefaultMaxWatchedServices = 500
	DefaultServiceIdle        = 10 * time.Minute
)

// EndpointWatcherOptions bound what an EndpointWatcher follows.
type EndpointWatcherOptions struct {
	// Namespaces are those the gate serves; nil or empty: every namespace.
	Namespaces []string
	// MaxServices caps the Services followed at once; a route naming one more is answered 503.
	MaxServices int
	// Idle is how long a Service no call named is still followed; then its watch ends.
	Idle time.Duration
	// Registerer, when set, gets the watcher's metrics.
	Registerer prometheus.Registerer
	// Clock is the time source for Idle. Default the real clock.
	Clock clock.PassiveClock
}

// EndpointWatcher follows the EndpointSlices of the Services routes name, each through its own
// informer selected by the label kubernetes.io/service-name in the Service's namespace: started
// on the first call that names the Service, stopped once no call has named it for Idle. Its
// memory and API load grow with the Services in use, never with the cluster's slices.
type EndpointWatcher struct {
	client kubernetes.Interface
	opts   EndpointWatcherOptions

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	services map[ServiceRef]*followedService
	// received counts the EndpointSlices delivered to the informers (listed or watched).
	received atomic.Int64
}

// followedService is one Service's informer and what its slices list. Fields after informer
// are guarded by the watcher's mu.
type followedService struct {
	informer cache.SharedIndexInformer
	stop     context.CancelFunc

	lastUsed time.Time
	// waiters are the WaitReady calls waiting on the Service: it is not stopped while any wait.
	waiters int
	count   EndpointCount
	// changed is closed, and replaced, whenever count changes.
	changed chan struct{}
}

var _ Endpoints = (*EndpointWatcher)(nil)

// NewEndpointWatcher returns a watcher over client; it follows nothing until a route names a
// Service. Stop ends it.
func NewEndpointWatcher(client kubernetes.Interface, opts EndpointWatcherOptions) *EndpointWatcher {
	if opts.MaxServices <= 0 {
		opts.MaxServices = DefaultMaxWatchedServices
	}
	if opts.Idle <= 0 {
		opts.Idle = DefaultServiceIdle
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if len(opts.Namespaces) == 1 && opts.Namespaces[0] == "" {
		opts.Namespaces = nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &EndpointWatcher{client: client, opts: opts, ctx: ctx, cancel: cancel, services: map[ServiceRef]*followedService{}}
	if r := opts.Registerer; r != nil {
		r.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Namespace: "zerowake", Subsystem: "gate", Name: "watched_services",
				Help: "Services whose EndpointSlices the gate follows now (routes naming a Service).",
			}, func() float64 { return float64(w.Followed()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Namespace: "zerowake", Subsystem: "gate", Name: "endpointslices_received_total",
				Help: "EndpointSlices the gate received (listed or watched) for the Services routes name.",
			}, func() float64 { return float64(w.received.Load()) }),
		)
	}
	w.wg.Go(w.sweepEvery)
	return w
}

// Ready implements Endpoints.
func (w *EndpointWatcher) Ready(s ServiceRef) (EndpointCount, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f, err := w.use(s)
	if err != nil {
		return EndpointCount{}, err
	}
	return f.count, nil
}

// WaitReady implements Endpoints. It is released by the informer's events, not by polling.
func (w *EndpointWatcher) WaitReady(ctx context.Context, s ServiceRef) (EndpointCount, error) {
	w.mu.Lock()
	f, err := w.use(s)
	if err != nil {
		w.mu.Unlock()
		return EndpointCount{}, err
	}
	f.waiters++
	w.mu.Unlock()
	want := max(s.MinReady, 1)
	defer func() {
		w.mu.Lock()
		f.waiters--
		f.lastUsed = w.opts.Clock.Now()
		w.mu.Unlock()
	}()
	for {
		w.mu.Lock()
		count, changed := f.count, f.changed
		w.mu.Unlock()
		if count.Ready >= want {
			return count, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return count, ctx.Err()
		case <-w.ctx.Done():
			return count, wake.ErrStopped
		}
	}
}

// Followed returns how many Services are followed now.
func (w *EndpointWatcher) Followed() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.services)
}

// Received returns how many EndpointSlices the informers received so far, listed or watched.
func (w *EndpointWatcher) Received() int64 { return w.received.Load() }

// Stop ends every informer and waits for them.
func (w *EndpointWatcher) Stop() {
	w.cancel()
	w.wg.Wait()
}

// use returns the Service's follower, starting it if needed, and marks it used now. w.mu is held.
func (w *EndpointWatcher) use(s ServiceRef) (*followedService, error) {
	if w.ctx.Err() != nil {
		return nil, wake.ErrStopped
	}
	key := ServiceRef{Namespace: s.Namespace, Name: s.Name}
	f, ok := w.services[key]
	if !ok {
		if w.opts.Namespaces != nil && !slices.Contains(w.opts.Namespaces, s.Namespace) {
			return nil, wake.ErrNamespaceNotWatched
		}
		if len(w.services) >= w.opts.MaxServices {
			return nil, ErrTooManyServices
		}
		f = w.follow(key)
		w.services[key] = f
	}
	f.lastUsed = w.opts.Clock.Now()
	return f, nil
}

// follow starts an informer over the Service's EndpointSlices. w.mu is held.
func (w *EndpointWatcher) follow(s ServiceRef) *followedService {
	selector := labels.Set{discoveryv1.LabelServiceName: s.Name}.String()
	informer := discoveryinformers.NewFilteredEndpointSliceInformer(w.client, s.Namespace, 0, cache.Indexers{},
		func(o *metav1.ListOptions) { o.LabelSelector = selector })
	_ = informer.SetTransform(trimSlice)
	ctx, stop := context.WithCancel(w.ctx)
	f := &followedService{informer: informer, stop: stop, changed: make(chan struct{})}
	recount := func(any) {
		w.received.Add(1)
		w.recount(s.Name, f)
	}
	_, _ = informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    recount,
		UpdateFunc: func(_, obj any) { recount(obj) },
		DeleteFunc: func(any) { w.recount(s.Name, f) },
	})
	w.wg.Go(func() { informer.RunWithContext(ctx) })
	return f
}

// recount reads the Service's slices from the informer's cache and wakes the waiters when the
// count changed.
func (w *EndpointWatcher) recount(service string, f *followedService) {
	var own []*discoveryv1.EndpointSlice
	for _, obj := range f.informer.GetStore().List() {
		// The label selector already chose these; checked again so that a cache is never
		// taken for another Service's.
		if s, ok := obj.(*discoveryv1.EndpointSlice); ok && s.Labels[discoveryv1.LabelServiceName] == service {
			own = append(own, s)
		}
	}
	count := EndpointCount{Ready: readyEndpoints(own), Slices: len(own)}
	w.mu.Lock()
	defer w.mu.Unlock()
	if count != f.count {
		f.count = count
		close(f.changed)
		f.changed = make(chan struct{})
	}
}

// sweepEvery stops, a few times per Idle, the informers of Services no call has named for Idle.
func (w *EndpointWatcher) sweepEvery() {
	t := time.NewTicker(max(w.opts.Idle/4, time.Second))
	defer t.Stop()
	for {
		select {
		case <-t.C:
			w.sweep()
		case <-w.ctx.Done():
			return
		}
	}
}

// sweep stops the informers of Services unused for Idle that no call waits on.
func (w *EndpointWatcher) sweep() {
	now := w.opts.Clock.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	for key, f := range w.services {
		if f.waiters == 0 && now.Sub(f.lastUsed) >= w.opts.Idle {
			f.stop()
			delete(w.services, key)
		}
	}
}

// readyEndpoints counts the distinct ready endpoints the slices list. An endpoint is ready when
// its ready condition is true or unset (which EndpointSlice consumers must read as ready); a
// terminating endpoint is not ready. Ports are not compared: a Service's slices are split by
// port set, and one pod may be listed in several of them, or in an IPv4 and an IPv6 slice, so
// an endpoint is counted once, by the object it refers to (its targetRef, a pod) or, when it
// names none, by its first address.
func readyEndpoints(slices []*discoveryv1.EndpointSlice) int {
	seen := map[string]struct{}{}
	for _, s := range slices {
		for i := range s.Endpoints {
			e := &s.Endpoints[i]
			if len(e.Addresses) == 0 || (e.Conditions.Ready != nil && !*e.Conditions.Ready) {
				continue
			}
			key := string(s.AddressType) + " " + e.Addresses[0]
			if r := e.TargetRef; r != nil {
				key = "ref " + r.Kind + " " + r.Namespace + "/" + r.Name + " " + string(r.UID)
			}
			seen[key] = struct{}{}
		}
	}
	return len(seen)
}

// trimSlice keeps of an EndpointSlice only what readyEndpoints and the selector check read: a
// slice of 100 endpoints carries zones, hints, node names and managed fields the gate never
// uses. It is idempotent, as an informer's transform must be.
func trimSlice(obj any) (any, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return obj, nil
	}
	t := &discoveryv1.EndpointSlice{AddressType: s.AddressType}
	t.Namespace, t.Name, t.UID, t.ResourceVersion = s.Namespace, s.Name, s.UID, s.ResourceVersion
	if name, ok := s.Labels[discoveryv1.LabelServiceName]; ok {
		t.Labels = map[string]string{discoveryv1.LabelServiceName: name}
	}
	t.Endpoints = make([]discoveryv1.Endpoint, len(s.Endpoints))
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		t.Endpoints[i] = discoveryv1.Endpoint{Addresses: e.Addresses[:min(len(e.Addresses), 1)],
			Conditions: discoveryv1.EndpointConditions{Ready: e.Conditions.Ready}}
		if r := e.TargetRef; r != nil {
			t.Endpoints[i].TargetRef = &corev1.ObjectReference{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name, UID: r.UID}
		}
	}
	return t, nil
}
