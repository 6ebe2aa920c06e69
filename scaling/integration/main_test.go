// Package integration tests package scaling against a real API server: what the API answers
// to the from-zero patch and to refusals, and the readiness rule on a kind of the tests' own.
// TestMain starts the local control plane; the tests act as its admin.
package integration

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/scale"

	"github.com/zerowake/zerowake/hack/localcluster"
	"github.com/zerowake/zerowake/scaling"
)

var (
	cluster *localcluster.Cluster
	kube    kubernetes.Interface
)

func TestMain(m *testing.M) {
	localcluster.Main(m, localcluster.Options{}, func(c *localcluster.Cluster) error {
		cluster, kube = c, c.Client()
		return nil
	})
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// request is one request to a /scale subresource, as sent.
type request struct {
	method, contentType string
}

// recorder keeps the /scale requests a client sends.
type recorder struct {
	mu       sync.Mutex
	requests []request
}

func (r *recorder) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		if strings.HasSuffix(req.URL.Path, "/scale") {
			r.mu.Lock()
			r.requests = append(r.requests, request{req.Method, req.Header.Get("Content-Type")})
			r.mu.Unlock()
		}
		return rt.RoundTrip(req)
	})
}

// take returns the requests recorded since the last take.
func (r *recorder) take() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.requests
	r.requests = nil
	return out
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// newHandler builds a ScaleHandler the way the controller's main does (cached discovery shared
// by the RESTMapper and the scale-kind resolver), from config, recording its /scale requests.
func newHandler(t *testing.T, config *rest.Config) (*scaling.ScaleHandler, scale.ScalesGetter, *recorder) {
	t.Helper()
	rec := &recorder{}
	config = rest.CopyConfig(config)
	config.Wrap(rec.wrap)
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		t.Fatal(err)
	}
	discovery := memory.NewMemCacheClient(client.Discovery())
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(discovery)
	scaleKinds := scale.NewDiscoveryScaleKindResolver(discovery)
	scales, err := scale.NewForConfig(config, mapper, dynamic.LegacyAPIPathResolverFunc, scaleKinds)
	if err != nil {
		t.Fatal(err)
	}
	return scaling.NewScaleHandler(scales, mapper, scaleKinds), scales, rec
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
