package gate

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zerowake/zerowake/wake"
)

func TestParseRouteReadsTheService(t *testing.T) {
	d := RouteDefaults{Timeout: time.Second, MaxTargets: 8}
	for _, tt := range []struct {
		query string
		want  *ServiceRef
	}{
		{"target=shop/web", nil},
		{"target=shop/web&service=shop/web-svc", &ServiceRef{"shop", "web-svc", 1}},
		// The route's one target asks for 3 replicas: the Service must list 3.
		{"target=shop/web:3&service=shop/web", &ServiceRef{"shop", "web", 3}},
		{"target=shop/web:3&service=shop/web:2", &ServiceRef{"shop", "web", 2}},
		// A group: which target the Service fronts is not known, so 1 unless said.
		{"target=shop/web:3,shop/api:2&service=shop/web", &ServiceRef{"shop", "web", 1}},
		{"target=shop/web&service=other/web", &ServiceRef{"other", "web", 1}},
	} {
		v, _ := url.ParseQuery(tt.query)
		r, err := parseRoute(fromQuery, v, http.Header{}, d)
		if err != nil {
			t.Errorf("%s: %v", tt.query, err)
			continue
		}
		if (r.Service == nil) != (tt.want == nil) || (r.Service != nil && *r.Service != *tt.want) {
			t.Errorf("%s: service %+v, want %+v", tt.query, r.Service, tt.want)
		}
	}
	for _, bad := range []string{"service=web", "service=/web", "service=shop/", "service=a/b/c", "service=shop/web:0",
		"service=shop/web:x", "service=shop/web:1001", "service=shop/a,shop/b", "service=shop/a&service=shop/b"} {
		v, _ := url.ParseQuery("target=shop/web&" + bad)
		if _, err := parseRoute(fromQuery, v, http.Header{}, d); err == nil {
			t.Errorf("%s was accepted", bad)
		}
	}
}

// As with targets, Envoy routes name the Service in a header, the other proxies in the URL, and
// neither mode reads the other's place: a client cannot point the gate at another Service.
func TestParseRouteTakesTheServiceFromOnePlaceOnly(t *testing.T) {
	d := RouteDefaults{Timeout: time.Second, MaxTargets: 8}
	header := http.Header{HeaderTarget: {"shop/web"}, HeaderService: {"shop/from-header"}}
	query := url.Values{"target": {"shop/web"}, "service": {"shop/from-query"}}
	if r, err := parseRoute(fromQuery, query, header, d); err != nil || r.Service == nil || r.Service.Name != "from-query" {
		t.Errorf("query mode: %+v %v", r.Service, err)
	}
	if r, err := parseRoute(fromHeader, query, header, d); err != nil || r.Service == nil || r.Service.Name != "from-header" {
		t.Errorf("header mode: %+v %v", r.Service, err)
	}
}

// fakeEndpoints plays the EndpointWatcher: per Service, a count that tests set, and the calls.
type fakeEndpoints struct {
	mu      sync.Mutex
	counts  map[string]EndpointCount
	err     error
	changed chan struct{}
	readies int
	waits   int
}

func newFakeEndpoints() *fakeEndpoints {
	return &fakeEndpoints{counts: map[string]EndpointCount{}, changed: make(chan struct{})}
}

func (f *fakeEndpoints) set(s string, c EndpointCount) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts[s] = c
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeEndpoints) Ready(s ServiceRef) (EndpointCount, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readies++
	return f.counts[s.String()], f.err
}

func (f *fakeEndpoints) WaitReady(ctx context.Context, s ServiceRef) (EndpointCount, error) {
	f.mu.Lock()
	f.waits++
	f.mu.Unlock()
	for {
		f.mu.Lock()
		c, changed, err := f.counts[s.String()], f.changed, f.err
		f.mu.Unlock()
		if err != nil {
			return c, err
		}
		if c.Ready >= s.MinReady {
			return c, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return c, ctx.Err()
		}
	}
}

func (f *fakeEndpoints) calls() (readies, waits int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.readies, f.waits
}

func serviceRoute(timeout time.Duration, min int, targets ...wake.Target) *Route {
	r := route(timeout, targets...)
	r.Service = &ServiceRef{Namespace: "shop", Name: "web", MinReady: min}
	return r
}

// A target that reports ready replicas does not pass at once while its Service's slices list
// fewer ready endpoints than wanted: the call is held, without waking anything, until they do.
func TestFastPathChecksTheServiceEndpoints(t *testing.T) {
	e := newFakeEndpoints()
	g, f, _ := newTestGate(t, Config{Endpoints: e})
	f.setReady(web)
	e.set("shop/web", EndpointCount{Ready: 1, Slices: 1})

	done := make(chan Answer)
	go func() { done <- g.Check(context.Background(), serviceRoute(10*time.Second, 2, web), "GET", "") }()
	waitFor(t, "the call to wait on the endpoints", func() bool { _, waits := e.calls(); return waits == 1 })
	if g.Held(web) != 1 {
		t.Fatalf("held %d, want the call held while the Service lists 1 of 2 ready endpoints", g.Held(web))
	}
	e.set("shop/web", EndpointCount{Ready: 2, Slices: 1})
	if a := <-done; a.Outcome != OutcomeWoken {
		t.Fatalf("answer %+v, want woken once the slices list 2", a)
	}
	if wakes, _ := f.counts(web); wakes != 0 {
		t.Errorf("a ready target was woken %d times", wakes)
	}
	// Now routable: the fast path answers from the caches.
	if a := g.Check(context.Background(), serviceRoute(10*time.Second, 2, web), "GET", ""); a.Outcome != OutcomeAwake {
		t.Fatalf("answer %+v, want awake", a)
	}
	if _, waits := e.calls(); waits != 1 {
		t.Errorf("the fast path waited on the endpoints (%d waits)", waits)
	}
}

// An idle target is woken first; the call is then still held until its pods are in the slices.
func TestHeldCallWaitsForTheSlicesAfterTheTarget(t *testing.T) {
	e := newFakeEndpoints()
	g, f, _ := newTestGate(t, Config{Endpoints: e})
	done := make(chan Answer)
	go func() { done <- g.Check(context.Background(), serviceRoute(10*time.Second, 1, web), "GET", "") }()
	waitFor(t, "the wake", func() bool { wakes, _ := f.counts(web); return wakes == 1 })
	if _, waits := e.calls(); waits != 0 {
		t.Errorf("waited on the endpoints before the target was ready")
	}
	f.setReady(web)
	waitFor(t, "the call to wait on the endpoints", func() bool { _, waits := e.calls(); return waits == 1 })
	select {
	case a := <-done:
		t.Fatalf("answered %+v while the slices list no ready endpoint", a)
	default:
	}
	e.set("shop/web", EndpointCount{Ready: 1, Slices: 1})
	if a := <-done; a.Outcome != OutcomeWoken {
		t.Fatalf("answer %+v, want woken", a)
	}
}

// A Service that never lists a ready endpoint ends in 503 at the route's timeout, with what the
// slices listed; none at all hints at the Service's existence and selector.
func TestServiceNotRoutableWithinTheTimeout(t *testing.T) {
	e := newFakeEndpoints()
	g, f, _ := newTestGate(t, Config{Endpoints: e, RetryAfter: 3 * time.Second})
	f.setReady(web)
	a := g.Check(context.Background(), serviceRoute(50*time.Millisecond, 1, web), "GET", "")
	if a.Outcome != OutcomeTimeout || a.Reason != "NotRoutableYet" || a.Status() != 503 || a.RetryAfter != 3*time.Second {
		t.Fatalf("answer %+v, want timeout NotRoutableYet 503 with Retry-After", a)
	}
	if !strings.Contains(a.Message, "lists 0 of the 1 ready endpoints") || !strings.Contains(a.Message, "selector") {
		t.Errorf("message %q", a.Message)
	}
}

// Routes that name no Service never consult the endpoints: they pass on the targets alone.
func TestRouteWithoutServiceIgnoresEndpoints(t *testing.T) {
	e := newFakeEndpoints()
	g, f, _ := newTestGate(t, Config{Endpoints: e})
	f.setReady(web)
	if a := g.Check(context.Background(), route(time.Second, web), "GET", ""); a.Outcome != OutcomeAwake {
		t.Fatalf("answer %+v, want awake", a)
	}
	if readies, waits := e.calls(); readies+waits != 0 {
		t.Errorf("endpoints consulted %d+%d times for a route naming no Service", readies, waits)
	}
}

// A Service the gate cannot follow is answered at once, before any wake.
func TestServiceThatCannotBeFollowed(t *testing.T) {
	for _, tt := range []struct {
		name    string
		err     error
		nilEps  bool
		outcome Outcome
		reason  string
	}{
		{"namespace not served", wake.ErrNamespaceNotWatched, false, OutcomeBadRoute, "NamespaceNotServed"},
		{"too many Services followed", ErrTooManyServices, false, OutcomeFailed, "TooManyServices"},
		{"gate stopping", wake.ErrStopped, false, OutcomeUnavailable, "GateStopping"},
		{"no endpoint follower", nil, true, OutcomeBadRoute, "ServicesNotFollowed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newFakeEndpoints()
			e.err = tt.err
			cfg := Config{Endpoints: e}
			if tt.nilEps {
				cfg.Endpoints = nil
			}
			g, f, _ := newTestGate(t, cfg)
			a := g.Check(context.Background(), serviceRoute(10*time.Second, 1, web), "GET", "")
			if a.Outcome != tt.outcome || a.Reason != tt.reason {
				t.Fatalf("answer %+v, want %s %s", a, tt.outcome, tt.reason)
			}
			if wakes, _ := f.counts(web); wakes != 0 {
				t.Errorf("woken %d times for a route that cannot be served", wakes)
			}
		})
	}
}

func TestRoutingAnswer(t *testing.T) {
	s := ServiceRef{Namespace: "shop", Name: "web", MinReady: 2}
	some := EndpointCount{Ready: 1, Slices: 1}
	for _, tt := range []struct {
		name                 string
		err, routeErr, other error
		outcome              Outcome
		reason               string
	}{
		{"ready", nil, nil, nil, OutcomeWoken, ""},
		{"timeout", context.DeadlineExceeded, context.DeadlineExceeded, nil, OutcomeTimeout, "NotRoutableYet"},
		{"proxy hung up", context.Canceled, context.Canceled, context.Canceled, OutcomeCanceled, "Canceled"},
		{"other error", errors.New("boom"), nil, nil, OutcomeFailed, "EndpointsFailed"},
	} {
		a := routingAnswer(s, some, tt.err, tt.routeErr, tt.other, time.Second, time.Second)
		if a.Outcome != tt.outcome || a.Reason != tt.reason {
			t.Errorf("%s: %+v, want %s %s", tt.name, a, tt.outcome, tt.reason)
		}
		if tt.reason == "NotRoutableYet" && (!strings.Contains(a.Message, "lists 1 of the 2") || strings.Contains(a.Message, "selector")) {
			t.Errorf("%s: message %q", tt.name, a.Message)
		}
	}
}
