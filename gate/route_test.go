package gate

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/zerowake/zerowake/wake"
)

// A route in a path prefix, as Envoy Gateway, the Gateway API ExternalAuth filter and Istio
// send it: the prefix configured, then (for most of them) the client's path and query.
func TestReadRouteFromPath(t *testing.T) {
	d := RouteDefaults{Timeout: 30 * time.Second, MaxTimeout: time.Minute, MaxTargets: 3}
	db := wake.StatefulSet("shop", "db")
	db.MinReplicas = 2
	widget := wake.Target{Namespace: "shop", APIVersion: "example.com/v1", Kind: "Widget", Name: "w"}
	tests := []struct {
		name, path  string
		wantTargets []wake.Target
		wantTimeout time.Duration
		wantPage    bool
	}{
		{"the prefix alone (NGINX Gateway Fabric calls it as configured)",
			"/route/target=shop/deployment/web&timeout=10s/-", []wake.Target{web}, 10 * time.Second, false},
		{"the client's path and query appended (Envoy)",
			"/route/target=shop/deployment/web/-/orders/7?target=evil/deployment/x&timeout=1h", []wake.Target{web}, 30 * time.Second, false},
		{"a client's path that itself holds the end and more parameters",
			"/route/target=shop/web/-/x/-/&target=evil/deployment/x&page=true", []wake.Target{web}, 30 * time.Second, false},
		{"the client's path \"/\"",
			"/route/target=shop/web/-/", []wake.Target{web}, 30 * time.Second, false},
		{"several targets, minReplicas, any kind with /scale, page",
			"/route/target=shop/deployment/web,shop/sts/db:2&target=shop/Widget.v1.example.com/w&page=true/-/",
			[]wake.Target{web, db, widget}, 30 * time.Second, true},
		{"percent-encoded values, as in a query",
			"/route/target=shop%2Fdeployment%2Fweb&timeout=2m/-/a%2Fb", []wake.Target{web}, time.Minute, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, tt.path, nil)
			// A client's own route header: not read on /route/.
			req.Header.Set(HeaderTarget, "evil/deployment/y")
			r, err := ReadRoute(req, d)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Targets) != len(tt.wantTargets) {
				t.Fatalf("targets %+v, want %+v", r.Targets, tt.wantTargets)
			}
			for i := range r.Targets {
				if r.Targets[i] != tt.wantTargets[i] {
					t.Errorf("target %d = %+v, want %+v", i, r.Targets[i], tt.wantTargets[i])
				}
			}
			if r.Timeout != tt.wantTimeout || r.Page != tt.wantPage {
				t.Errorf("timeout %s page %v, want %s %v (2m is capped at the gate's 1m)", r.Timeout, r.Page, tt.wantTimeout, tt.wantPage)
			}
		})
	}
}

func TestReadRouteFromPathRefusesARouteWithoutItsEnd(t *testing.T) {
	d := RouteDefaults{Timeout: time.Second}
	for _, path := range []string{
		"/route/target=shop/web",             // the prefix configured without "/-"
		"/route/target=shop/web/orders",      // the same, with the client's path appended
		"/route/target=shop/web/-orders",     // "/-" that is not a whole segment
		"/route/target=shop/web;x=1/-",       // not a query's syntax
		"/route/timeout=10s/-/target=shop/x", // no target before the end
		"/route/-",
	} {
		if r, err := ReadRoute(httptest.NewRequest(http.MethodGet, path, nil), d); err == nil {
			t.Errorf("%s was read as %+v", path, r)
		}
	}
	if _, err := ReadRoute(httptest.NewRequest(http.MethodGet, "/route/target=shop/web", nil), d); err == nil || !strings.Contains(err.Error(), `no "/-" after the route`) {
		t.Errorf("error %v does not say what is missing", err)
	}
}

// ReadRoute is the handler's reading: the same sources for the other two paths too.
func TestReadRouteFromQueryAndHeaders(t *testing.T) {
	d := RouteDefaults{Timeout: time.Second}
	r, err := ReadRoute(httptest.NewRequest(http.MethodGet, "/auth?target=shop/web", nil), d)
	if err != nil || len(r.Targets) != 1 || r.Targets[0] != web {
		t.Errorf("/auth: %+v, %v", r, err)
	}
	req := httptest.NewRequest(http.MethodGet, "/ext_authz/x?target=evil/deployment/x", nil)
	req.Header.Set(HeaderTarget, "shop/deployment/web")
	r, err = ReadRoute(req, d)
	if err != nil || len(r.Targets) != 1 || r.Targets[0] != web {
		t.Errorf("/ext_authz: %+v, %v", r, err)
	}
	if _, err := ReadRoute(httptest.NewRequest(http.MethodGet, "/elsewhere?target=shop/web", nil), d); err == nil {
		t.Error("a path the gate does not serve was read")
	}
}

// Over HTTP: the token counts in the route's part of the path or in the header, never in the
// client's part; a path without its end is a bad route (400), or unauthorized (401) when the
// token was to be in it.
func TestPathRouteOverHTTP(t *testing.T) {
	srv, f := newProtocolServer(t, Config{AuthToken: "s3cret-token"})
	f.setReady(web)
	for name, tc := range map[string]struct {
		path   string
		header http.Header
		want   int
	}{
		"token in the route":          {"/route/target=shop/web&token=s3cret-token/-/orders", nil, 200},
		"token in the header (Istio)": {"/route/target=shop/web/-/orders", http.Header{HeaderToken: {"s3cret-token"}}, 200},
		"token in the client's path":  {"/route/target=shop/web/-/&token=s3cret-token", nil, 401},
		"token in the client's query": {"/route/target=shop/web/-/orders?token=s3cret-token", nil, 401},
		"no end, token in the path":   {"/route/target=shop/web&token=s3cret-token/orders", nil, 401},
		"no end, token in the header": {"/route/target=shop/web/orders", http.Header{HeaderToken: {"s3cret-token"}}, 400},
		"the end, no target":          {"/route/token=s3cret-token/-/orders", nil, 400},
		"/route without a slash":      {"/route", http.Header{HeaderToken: {"s3cret-token"}}, 404},
	} {
		h := tc.header
		if h == nil {
			h = http.Header{}
		}
		resp, body := call(t, http.MethodGet, srv.URL+tc.path, h)
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d %q, want %d", name, resp.StatusCode, body, tc.want)
		}
	}
}
