package gate

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"

	"github.com/zerowake/zerowake/wake"
)

// By default, what reaches end clients says only what happened, in a fixed text per outcome:
// no namespace, no kubectl command, no message from the API server; X-Zerowake-Reason is not
// sent. The detail goes to the gate's log.
func TestClientsGetNoDetailsByDefault(t *testing.T) {
	srv, f := newProtocolServer(t, Config{})
	f.failWith(web, &wake.FailedError{Namespace: "shop", Name: "web", Reason: ReasonNotOptedIn,
		Message: `admission webhook "policy.example.com" denied the request: namespace shop is frozen`})
	resp, body := call(t, http.MethodGet, srv.URL+"/auth?target=shop/deployment/web&timeout=1s", http.Header{})
	if resp.StatusCode != 403 || resp.Header.Get(HeaderOutcome) != "refused" {
		t.Fatalf("got %d %v", resp.StatusCode, resp.Header)
	}
	if r := resp.Header.Get(HeaderReason); r != "" {
		t.Errorf("X-Zerowake-Reason %q sent to the client", r)
	}
	for _, secret := range []string{"shop", "kubectl", "webhook", "zerowake.dev/wake"} {
		if strings.Contains(body, secret) {
			t.Errorf("body %q tells the client %q", body, secret)
		}
	}

	f.failWith(web, errSignal("scalerequests.zerowake.dev \"web\" is forbidden: User \"system:serviceaccount:zerowake-system:zerowake-gate\" cannot create"))
	resp, body = call(t, http.MethodGet, srv.URL+"/auth?target=shop/deployment/web&timeout=1s", http.Header{})
	if resp.StatusCode != 503 || strings.Contains(body, "serviceaccount") || strings.Contains(body, "shop") {
		t.Errorf("failed answer %d %q carries detail", resp.StatusCode, body)
	}
}

type errSignal string

func (e errSignal) Error() string { return string(e) }

// --expose-details turns the detail on for clients, as before.
func TestExposeDetails(t *testing.T) {
	srv, f := newProtocolServer(t, Config{ExposeDetails: true})
	f.failWith(web, &wake.FailedError{Namespace: "shop", Name: "web", Reason: ReasonNotOptedIn})
	resp, body := call(t, http.MethodGet, srv.URL+"/auth?target=shop/deployment/web", http.Header{})
	if resp.Header.Get(HeaderReason) != ReasonNotOptedIn || !strings.Contains(body, "kubectl label") {
		t.Errorf("with details: %v %q", resp.Header, body)
	}
}

// Under nginx the client's own X-Forwarded-Method is copied into the call; only the header the
// proxy sets (--method-header) decides whether the call gets the page.
func TestMethodHeaderIsTheOneTheProxySets(t *testing.T) {
	srv, _ := newProtocolServer(t, Config{MethodHeader: "X-Original-Method"})
	h := nginxHeaders(http.Header{"Accept": {"text/html"}, "X-Forwarded-Method": {"GET"}}) // the proxy says POST
	resp, _ := call(t, http.MethodGet, srv.URL+"/auth?target=shop/deployment/web&timeout=50ms&page=true", h)
	if o := resp.Header.Get(HeaderOutcome); o != "timeout" {
		t.Errorf("outcome %q: the client's X-Forwarded-Method chose the page for a POST; want it held (timeout)", o)
	}
}

// A malformed route is logged with the gate's path only: Envoy appends the client's path and
// query (tokens included) to its calls.
func TestMalformedRouteLogsNoClientURI(t *testing.T) {
	var logs bytes.Buffer
	logger := funcr.New(func(prefix, args string) { logs.WriteString(args + "\n") }, funcr.Options{Verbosity: 9})
	f := newFakeWaker()
	g := New(f, Config{}, nil, logger)
	req, _ := http.NewRequest(http.MethodGet, "/ext_authz/orders/7?access_token=s3cret&session=abc", nil)
	rec := &recorder{header: http.Header{}}
	g.Handler().ServeHTTP(rec, req)
	if rec.status != 400 {
		t.Fatalf("status %d, want 400", rec.status)
	}
	if strings.Contains(logs.String(), "s3cret") || strings.Contains(logs.String(), "orders/7") {
		t.Errorf("the log carries the client's URI: %s", logs.String())
	}
}

type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(s int)           { r.status = s }

// With a token configured, a call without it (or with another) gets 401, no detail and no
// Wake; the token is taken from the proxy's header, or from the /auth URL (Traefik), never
// from the client's part of an /ext_authz path.
func TestCallsNeedTheProxysToken(t *testing.T) {
	srv, f := newProtocolServer(t, Config{AuthToken: "s3cret-token"})
	f.setReady(web)
	auth := srv.URL + "/auth?target=shop/deployment/web"
	for name, tc := range map[string]struct {
		url    string
		header http.Header
		want   int
	}{
		"no token":            {auth, http.Header{}, 401},
		"wrong token":         {auth, http.Header{HeaderToken: {"guess"}}, 401},
		"prefix of the token": {auth, http.Header{HeaderToken: {"s3cret"}}, 401},
		"header":              {auth, http.Header{HeaderToken: {"s3cret-token"}}, 200},
		"url (Traefik)":       {auth + "&token=s3cret-token", http.Header{}, 200},
		"client's query on ext_authz": {srv.URL + "/ext_authz/x?token=s3cret-token",
			http.Header{HeaderTarget: {"shop/deployment/web"}}, 401},
		"envoy header": {srv.URL + "/ext_authz/x", http.Header{HeaderTarget: {"shop/deployment/web"}, HeaderToken: {"s3cret-token"}}, 200},
	} {
		resp, body := call(t, http.MethodGet, auth, tc.header)
		if tc.url != auth {
			resp, body = call(t, http.MethodGet, tc.url, tc.header)
		}
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d %q, want %d", name, resp.StatusCode, body, tc.want)
		}
		if tc.want == 401 && (strings.Contains(body, "shop") || resp.Header.Get(HeaderReason) != "") {
			t.Errorf("%s: 401 carries detail: %q %v", name, body, resp.Header)
		}
	}
	f.failWith(wake.Deployment("shop", "idle"), nil)
	resp, _ := call(t, http.MethodGet, srv.URL+"/auth?target=shop/deployment/idle&timeout=50ms", http.Header{})
	if wakes, _ := f.counts(wake.Deployment("shop", "idle")); resp.StatusCode != 401 || wakes != 0 {
		t.Errorf("an unauthenticated call for an idle target: %d, %d wakes; want 401 and none", resp.StatusCode, wakes)
	}
}
