package examples

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/zerowake/zerowake/gate"
	"github.com/zerowake/zerowake/wake"
)

func examplesDir(name string) string { return filepath.Join(root, "deploy", "examples", name) }

// dryRun applies one manifest file with a server-side dry run: the API server validates it
// against the CRD's schema and rules (unknown fields included) and stores nothing.
func dryRun(t *testing.T, file string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := cluster.Kubectl(ctx, "apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", file)
	return err
}

func manifests(t *testing.T, example string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(examplesDir(example), "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", examplesDir(example), err)
	}
	return files
}

// Every manifest of every example is accepted by the projects' CRDs. The Gateway API's
// ExternalAuth filter is in its experimental channel only, as the NGINX Gateway Fabric example
// says: the standard channel refuses it.
func TestExamplesPassServerSideDryRun(t *testing.T) {
	for _, example := range []string{"gateway-api-envoy-gateway", "traefik", "istio"} {
		for _, file := range manifests(t, example) {
			t.Run("standard channel/"+example+"/"+filepath.Base(file), func(t *testing.T) {
				if err := dryRun(t, file); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
	ngfRoute := filepath.Join(examplesDir("gateway-api-nginx-gateway-fabric"), "httproute.yaml")
	t.Run("standard channel refuses the ExternalAuth filter", func(t *testing.T) {
		err := dryRun(t, ngfRoute)
		if err == nil || !strings.Contains(err.Error(), "externalAuth") {
			t.Fatalf("the standard channel's HTTPRoute took the ExternalAuth filter: %v", err)
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := installCRDs(ctx, "gateway-api-experimental"); err != nil {
		t.Fatal(err)
	}
	for _, example := range []string{"gateway-api-nginx-gateway-fabric", "gateway-api-envoy-gateway"} {
		for _, file := range manifests(t, example) {
			t.Run("experimental channel/"+example+"/"+filepath.Base(file), func(t *testing.T) {
				// The API server may take a moment to serve the new schema.
				var err error
				for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
					if err = dryRun(t, file); err == nil {
						return
					}
				}
				t.Fatal(err)
			})
		}
	}
}

// objects reads the YAML documents of an example's file.
func objects(t *testing.T, example, file string) []*unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(examplesDir(example), file))
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return objs
		} else if err != nil {
			t.Fatalf("%s/%s: %v", example, file, err)
		}
		if m != nil {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
}

func str(t *testing.T, obj map[string]any, fields ...string) string {
	t.Helper()
	v, found, err := unstructured.NestedFieldNoCopy(obj, fields...)
	if err != nil || !found {
		t.Fatalf("no %s in %v", strings.Join(fields, "."), obj)
	}
	switch v := v.(type) {
	case string:
		return v
	case int64:
		return strconv.FormatInt(v, 10)
	case float64: // the YAML decoder goes through JSON
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	t.Fatalf("%s is %T", strings.Join(fields, "."), v)
	return ""
}

// gateService is the gate's Service as deploy/gate defines it.
type gateService struct {
	name, namespace string
	port            string
}

func theGatesService(t *testing.T) gateService {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "deploy", "gate", "service.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var svc struct {
		Metadata struct{ Name, Namespace string }
		Spec     struct{ Ports []struct{ Port int } }
	}
	if err := yaml.Unmarshal(data, &svc); err != nil || len(svc.Spec.Ports) != 1 {
		t.Fatalf("deploy/gate/service.yaml: %v", err)
	}
	return gateService{svc.Metadata.Name, svc.Metadata.Namespace, strconv.Itoa(svc.Spec.Ports[0].Port)}
}

// The token the examples carry in place of the gate's.
const placeholderToken = "REPLACE_WITH_GATE_TOKEN"

// awakeTargets stands in for the wake client: every target is Ready, and it records which the
// gate asked about.
type awakeTargets struct {
	mu    sync.Mutex
	asked []wake.Target
}

func (a *awakeTargets) Demand(t wake.Target) wake.Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.asked = append(a.asked, t)
	return wake.Status{Exists: true, Observed: true, Ready: true}
}
func (a *awakeTargets) Wake(context.Context, wake.Target) (wake.Action, error) {
	return wake.ActionNone, errors.New("an awake target is never woken")
}
func (a *awakeTargets) WaitReady(context.Context, wake.Target) (time.Duration, error) {
	return 0, nil
}

// call is a forward-auth call as a proxy sends it.
type call struct {
	method, target string // target: path and query
	header         http.Header
}

// checkCall reads the call's route with the gate's parser and plays it against the gate's
// handler (token required): it must name only web, and pass with the token where the example
// puts it and fail (401) without.
func checkCall(t *testing.T, c call, withoutToken call, wantTimeout time.Duration, wantPage bool) {
	t.Helper()
	req := httptest.NewRequest(c.method, c.target, nil)
	req.Header = c.header.Clone()
	route, err := gate.ReadRoute(req, gate.RouteDefaults{Timeout: gate.DefaultTimeout, MaxTimeout: gate.DefaultMaxTimeout})
	if err != nil {
		t.Fatalf("the gate cannot read the route of %s: %v", c.target, err)
	}
	web := wake.Deployment("shop", "web")
	if len(route.Targets) != 1 || route.Targets[0] != web {
		t.Errorf("targets %+v, want only %v", route.Targets, web)
	}
	if route.Timeout != wantTimeout || route.Page != wantPage {
		t.Errorf("timeout %s page %v, want %s %v", route.Timeout, route.Page, wantTimeout, wantPage)
	}

	waker := &awakeTargets{}
	handler := gate.New(waker, gate.Config{AuthToken: placeholderToken}, nil, logr.Discard()).Handler()
	for _, tc := range []struct {
		call call
		want int
	}{{c, http.StatusOK}, {withoutToken, http.StatusUnauthorized}} {
		req := httptest.NewRequest(tc.call.method, tc.call.target, nil)
		req.Header = tc.call.header.Clone()
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s %s (%v): %d %q, want %d", tc.call.method, tc.call.target, tc.call.header, rec.Code, rec.Body, tc.want)
		}
	}
	if len(waker.asked) != 1 || waker.asked[0] != web {
		t.Errorf("the gate asked about %+v, want %v once", waker.asked, web)
	}
}

// A client's request as it reaches the proxy: its path and query try to steer the gate.
const clientPath = "/orders/7?target=evil/deployment/x&token=guess"

func withoutTokenParam(t *testing.T, p string) string {
	t.Helper()
	if !strings.Contains(p, "&token="+placeholderToken) {
		t.Fatalf("%s carries no token", p)
	}
	return strings.Replace(p, "&token="+placeholderToken, "", 1)
}

func TestEnvoyGatewayRoute(t *testing.T) {
	svc := theGatesService(t)
	var policy *unstructured.Unstructured
	for _, o := range objects(t, "gateway-api-envoy-gateway", "securitypolicy.yaml") {
		if o.GetKind() == "SecurityPolicy" {
			policy = o
		}
	}
	if policy == nil {
		t.Fatal("no SecurityPolicy")
	}
	httpAuth := policy.Object["spec"].(map[string]any)["extAuth"].(map[string]any)["http"].(map[string]any)
	ref := httpAuth["backendRefs"].([]any)[0].(map[string]any)
	if got := (gateService{str(t, ref, "name"), str(t, ref, "namespace"), str(t, ref, "port")}); got != svc {
		t.Errorf("backendRef %+v, want deploy/gate's Service %+v", got, svc)
	}
	// Envoy appends the client's path and query to http.path, calls with the client's method
	// and sends Accept (headersToExtAuth) but no header of its own.
	path := str(t, httpAuth, "path")
	header := map[string][]string{"Accept": {"text/html"}}
	checkCall(t,
		call{"POST", path + clientPath, header},
		call{"POST", withoutTokenParam(t, path) + clientPath, header},
		30*time.Second, true)
}

func TestNginxGatewayFabricRoute(t *testing.T) {
	svc := theGatesService(t)
	route := objects(t, "gateway-api-nginx-gateway-fabric", "httproute.yaml")[0]
	filter := route.Object["spec"].(map[string]any)["rules"].([]any)[0].(map[string]any)["filters"].([]any)[0].(map[string]any)
	auth := filter["externalAuth"].(map[string]any)
	ref := auth["backendRef"].(map[string]any)
	if got := (gateService{str(t, ref, "name"), str(t, ref, "namespace"), str(t, ref, "port")}); got != svc {
		t.Errorf("backendRef %+v, want deploy/gate's Service %+v", got, svc)
	}
	path := str(t, auth, "http", "path")
	header := map[string][]string{"Method": {"POST"}, "Path": {clientPath}}
	// NGINX Gateway Fabric calls the path as it is, in a GET subrequest.
	t.Run("as configured", func(t *testing.T) {
		checkCall(t, call{"GET", path, header}, call{"GET", withoutTokenParam(t, path), header}, 30*time.Second, false)
	})
	// An implementation that appends the client's path, as the Gateway API describes http.path.
	t.Run("with the client's path appended", func(t *testing.T) {
		checkCall(t, call{"POST", path + clientPath, header}, call{"POST", withoutTokenParam(t, path) + clientPath, header}, 30*time.Second, false)
	})
}

func TestTraefikRoute(t *testing.T) {
	svc := theGatesService(t)
	var address string
	for _, o := range objects(t, "traefik", "middleware.yaml") {
		if o.GetName() == "wake-web" {
			address = str(t, o.Object, "spec", "forwardAuth", "address")
		}
	}
	u, err := url.Parse(address)
	if err != nil {
		t.Fatal(err)
	}
	if want := svc.name + "." + svc.namespace + ".svc:" + svc.port; u.Host != want {
		t.Errorf("forwardAuth calls %s, want deploy/gate's Service %s", u.Host, want)
	}
	// Traefik calls the address with GET, the client's Accept (authRequestHeaders) and its own
	// X-Forwarded-Method; a client's own route header is not copied, but must not count either.
	header := map[string][]string{"Accept": {"text/html"}, "X-Forwarded-Method": {"GET"}, gate.HeaderTarget: {"evil/deployment/x"}}
	checkCall(t, call{"GET", u.RequestURI(), header}, call{"GET", withoutTokenParam(t, u.RequestURI()), header}, 25*time.Second, true)
}

func TestIstioRoute(t *testing.T) {
	svc := theGatesService(t)
	cm := objects(t, "istio", "mesh-config.yaml")[0]
	var mesh struct {
		ExtensionProviders []struct {
			Name              string
			EnvoyExtAuthzHTTP struct {
				Service                         string
				Port                            int
				PathPrefix                      string
				IncludeAdditionalHeadersInCheck map[string]string
			} `json:"envoyExtAuthzHttp"`
		}
	}
	if err := yaml.Unmarshal([]byte(str(t, cm.Object, "data", "mesh")), &mesh); err != nil {
		t.Fatal(err)
	}
	if len(mesh.ExtensionProviders) != 1 {
		t.Fatalf("providers %+v", mesh.ExtensionProviders)
	}
	p := mesh.ExtensionProviders[0]
	for _, file := range []string{"authorizationpolicy.yaml", "authorizationpolicy-waypoint.yaml"} {
		if got := str(t, objects(t, "istio", file)[0].Object, "spec", "provider", "name"); got != p.Name {
			t.Errorf("%s names provider %q, want %q", file, got, p.Name)
		}
	}
	h := p.EnvoyExtAuthzHTTP
	if want := svc.name + "." + svc.namespace + ".svc.cluster.local:" + svc.port; h.Service+":"+strconv.Itoa(h.Port) != want {
		t.Errorf("provider calls %s:%d, want deploy/gate's Service %s", h.Service, h.Port, want)
	}
	// The proxy appends the client's path and query to pathPrefix and adds the provider's
	// headers, the token among them, over any the client sent.
	header := http.Header{"Accept": {"text/html"}}
	for k, v := range h.IncludeAdditionalHeadersInCheck {
		header.Set(k, v)
	}
	if header.Get(gate.HeaderToken) != placeholderToken {
		t.Fatalf("the provider adds no %s header: %v", gate.HeaderToken, h.IncludeAdditionalHeadersInCheck)
	}
	without := header.Clone()
	without.Del(gate.HeaderToken)
	checkCall(t, call{"GET", h.PathPrefix + clientPath, header}, call{"GET", h.PathPrefix + clientPath, without}, 30*time.Second, true)
}
