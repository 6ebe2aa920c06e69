package gate

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/zerowake/zerowake/wake"
)

// The conventions of each proxy's forward-auth call, played with httptest against the gate's
// handler: what the proxy sends, and what it does with the answer.

func newProtocolServer(t *testing.T, cfg Config) (*httptest.Server, *fakeWaker) {
	t.Helper()
	f := newFakeWaker()
	srv := httptest.NewServer(New(f, cfg, nil, logr.Discard()).Handler())
	t.Cleanup(srv.Close)
	return srv, f
}

func call(t *testing.T, method, url string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// nginx auth_request: a subrequest to an internal location that proxies to the gate, with the
// client's headers (proxy_pass_request_headers is on by default), no body, and the original
// method and URI in X-Original-Method and X-Original-URI as the usual configuration sets them.
// nginx lets 2xx through, returns 401 and 403 to the client, and treats anything else as an
// error (500) unless error_page maps it; it reads the answer's headers with auth_request_set.
func nginxHeaders(clientHeaders http.Header) http.Header {
	h := clientHeaders.Clone()
	h.Set("X-Original-URI", "/orders?id=7")
	h.Set("X-Original-Method", "POST")
	h.Set("Content-Length", "")
	return h
}

func TestNginxAuthRequest(t *testing.T) {
	srv, f := newProtocolServer(t, Config{RetryAfter: 7 * time.Second, ExposeDetails: true, MethodHeader: "X-Original-Method"})
	auth := srv.URL + "/auth?target=shop/deployment/web&timeout=100ms"
	// A client trying to steer the gate to another target through a copied header.
	client := http.Header{HeaderTarget: {"evil/deployment/x"}, "Accept": {"text/html"}}

	t.Run("awake: 200, no body", func(t *testing.T) {
		f.setReady(web)
		defer delete(f.targets, web.String())
		resp, body := call(t, http.MethodGet, auth, nginxHeaders(client))
		if resp.StatusCode != 200 || body != "" || resp.Header.Get(HeaderOutcome) != "awake" {
			t.Fatalf("got %d %q %v, want 200 awake and no body", resp.StatusCode, body, resp.Header)
		}
		if wakes, _ := f.counts(wake.Deployment("evil", "x")); wakes != 0 {
			t.Error("a client header chose the target")
		}
	})
	t.Run("not ready in time: 503 with Retry-After for error_page", func(t *testing.T) {
		resp, body := call(t, http.MethodGet, auth, nginxHeaders(client))
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "7" || resp.Header.Get(HeaderOutcome) != "timeout" {
			t.Fatalf("got %d %v", resp.StatusCode, resp.Header)
		}
		if !strings.Contains(body, "not ready within 100ms") {
			t.Errorf("body %q", body)
		}
		if wakes, _ := f.counts(web); wakes != 1 {
			t.Errorf("web woken %d times, want 1", wakes)
		}
	})
	t.Run("refused: 403, which nginx returns to the client", func(t *testing.T) {
		f.failWith(web, &wake.FailedError{Namespace: "shop", Name: "web", Reason: ReasonNotOptedIn})
		defer f.failWith(web, nil)
		resp, body := call(t, http.MethodGet, auth, nginxHeaders(client))
		if resp.StatusCode != 403 || resp.Header.Get(HeaderReason) != ReasonNotOptedIn {
			t.Fatalf("got %d %v", resp.StatusCode, resp.Header)
		}
		if !strings.Contains(body, "has not opted in") || !strings.Contains(body, "zerowake.dev/wake=true") {
			t.Errorf("body %q does not say what the owner can do", body)
		}
	})
	t.Run("the original method decides the page: a POST is held, not paged", func(t *testing.T) {
		resp, _ := call(t, http.MethodGet, auth+"&page=true", nginxHeaders(client))
		if resp.Header.Get(HeaderOutcome) != "timeout" {
			t.Fatalf("outcome %q, want timeout (held)", resp.Header.Get(HeaderOutcome))
		}
	})
	t.Run("misconfigured route: 400", func(t *testing.T) {
		resp, body := call(t, http.MethodGet, srv.URL+"/auth", nginxHeaders(client))
		if resp.StatusCode != 400 || !strings.Contains(body, "names no target") {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	})
}

// Envoy ext_authz, HTTP mode: Envoy calls path_prefix + the client's path and query with the
// client's method, forwards only the client headers in allowed_headers (Host, Method, Path,
// Content-Length and Authorization by default) plus headers_to_add, and sends no body. It
// lets the request through only on 200, copying allowed_upstream_headers to it; otherwise it
// returns the gate's status, body and allowed_client_headers to the client.
func envoyHeaders() http.Header {
	h := http.Header{}
	h.Set("Content-Length", "0")
	h.Set("Accept", "text/html")
	h.Set(HeaderTarget, "shop/deployment/web")
	h.Set(HeaderTimeout, "100ms")
	return h
}

func TestEnvoyExtAuthzHTTP(t *testing.T) {
	srv, f := newProtocolServer(t, Config{RetryAfter: 2 * time.Second, ExposeDetails: true})
	// The client's own query names another target: in header mode it must not count.
	check := srv.URL + "/ext_authz/orders/7?target=evil/deployment/x&timeout=1h"

	t.Run("not ready in time: 503, Retry-After and reason for allowed_client_headers", func(t *testing.T) {
		resp, body := call(t, http.MethodPost, check, envoyHeaders())
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "2" || resp.Header.Get(HeaderReason) != "NotReadyYet" {
			t.Fatalf("got %d %v", resp.StatusCode, resp.Header)
		}
		if resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" || !strings.Contains(body, "Deployment shop/web") {
			t.Errorf("body %q (%s)", body, resp.Header.Get("Content-Type"))
		}
		if wakes, _ := f.counts(wake.Deployment("evil", "x")); wakes != 0 {
			t.Error("the client's query chose the target")
		}
		if wakes, _ := f.counts(web); wakes != 1 {
			t.Errorf("web woken %d times, want 1", wakes)
		}
	})
	t.Run("ready: exactly 200, outcome header for allowed_upstream_headers", func(t *testing.T) {
		f.setReady(web)
		resp, body := call(t, http.MethodPost, check, envoyHeaders())
		if resp.StatusCode != 200 || body != "" || resp.Header.Get(HeaderOutcome) != "awake" {
			t.Fatalf("got %d %q %v", resp.StatusCode, body, resp.Header)
		}
	})
	t.Run("path prefix alone", func(t *testing.T) {
		resp, _ := call(t, http.MethodGet, srv.URL+"/ext_authz", envoyHeaders())
		if resp.StatusCode != 200 {
			t.Fatalf("got %d", resp.StatusCode)
		}
	})
	t.Run("no target header: 400", func(t *testing.T) {
		resp, _ := call(t, http.MethodGet, srv.URL+"/ext_authz/x?target=shop/web", http.Header{})
		if resp.StatusCode != 400 {
			t.Fatalf("got %d", resp.StatusCode)
		}
	})
}

// Traefik forwardAuth and Caddy forward_auth: a GET to the configured address with the client's
// headers and X-Forwarded-Method/-Uri/-Host; 2xx lets the request through, anything else is
// returned to the client as it is (status, headers, body).
func TestForwardAuthPageForBrowsers(t *testing.T) {
	srv, f := newProtocolServer(t, Config{RetryAfter: 4 * time.Second})
	auth := srv.URL + "/auth?target=shop/web&page=true"
	h := http.Header{"Accept": {"text/html,application/xhtml+xml"}, "X-Forwarded-Method": {"GET"}, "X-Forwarded-Uri": {"/"}}

	resp, body := call(t, http.MethodGet, auth, h)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "4" || resp.Header.Get(HeaderOutcome) != "page" {
		t.Fatalf("got %d %v", resp.StatusCode, resp.Header)
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(body, `<meta http-equiv="refresh" content="4">`) {
		t.Errorf("not a self-refreshing page: %q", body)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Error("the page may be cached")
	}
	if wakes, waits := f.counts(web); wakes != 1 || waits != 0 {
		t.Errorf("%d wakes, %d waits: want woken, not held", wakes, waits)
	}

	h.Set("X-Forwarded-Method", "HEAD")
	resp, body = call(t, http.MethodGet, auth, h)
	if resp.StatusCode != 503 || body == "" {
		t.Fatalf("HEAD through a GET call: %d %q", resp.StatusCode, body)
	}

	f.setReady(web)
	if resp, _ := call(t, http.MethodGet, auth, h); resp.StatusCode != 200 {
		t.Fatalf("after ready: %d", resp.StatusCode)
	}
}

func TestUnknownPath(t *testing.T) {
	srv, _ := newProtocolServer(t, Config{})
	if resp, _ := call(t, http.MethodGet, srv.URL+"/?target=shop/web", http.Header{}); resp.StatusCode != 404 {
		t.Fatalf("got %d, want 404", resp.StatusCode)
	}
}
