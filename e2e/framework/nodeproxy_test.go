package framework

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// backend is an HTTP server on one loopback address that names itself and counts its requests.
type backend struct {
	addr string
	hits atomic.Int64
}

func startBackend(t *testing.T, ip string, port int) *backend {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{addr: l.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		fmt.Fprintf(w, "backend %s", ip)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return b
}

func endpointSlice(namespace, service, name string, ready map[string]bool) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for ip, r := range ready {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: new(r)}})
	}
	return s
}

// TestIngressProxyFollowsEndpointSlices runs the ingress proxy's Caddy on loopback, with
// loopback addresses standing in for pods: a request that arrives while the Service has no
// ready endpoint is sent to the endpoint that becomes ready while it waits (which a pushed
// configuration could not do), only ready endpoints get traffic, and the gate is asked first,
// with the route's target and the token.
func TestIngressProxyFollowsEndpointSlices(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: needs the Caddy binary from hack/tools.sh")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	caddy, err := CaddyPath(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Unix socket paths are short; t.TempDir's may not be.
	dir, err := os.MkdirTemp("", "zw-ingress-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	ready := startBackend(t, "127.0.0.2", 0)
	_, portText, _ := net.SplitHostPort(ready.addr)
	port, _ := strconv.Atoi(portText)
	notReady := startBackend(t, "127.0.0.3", port)

	var gateCalls atomic.Int64
	var lastAuth atomic.Value
	gateListener, err := net.Listen("tcp", "127.0.0.4:0")
	if err != nil {
		t.Fatal(err)
	}
	gate := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gateCalls.Add(1)
		lastAuth.Store(r.URL.RequestURI() + " token=" + r.Header.Get("X-Zerowake-Token"))
	})}
	go func() { _ = gate.Serve(gateListener) }()
	t.Cleanup(func() { gate.Close() })
	gatePort := gateListener.Addr().(*net.TCPAddr).Port

	client := fake.NewClientset(endpointSlice("sys", "gate", "gate-1", map[string]bool{"127.0.0.4": true}))
	resolver, err := StartEndpointResolver(ctx, client, dir+"/dns.sock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(resolver.Stop)

	proxy, err := StartIngressProxy(ctx, IngressProxyOptions{
		Caddy: caddy, Dir: dir, Resolver: resolver, Run: HostCommander{},
		Gate: IngressGate{Namespace: "sys", Service: "gate", Port: gatePort, Token: "s3cret"},
		Routes: []IngressRoute{
			{Host: "app.test", Namespace: "shop", Service: "web", Port: port, Target: "shop/deployment/web", Timeout: 30 * time.Second},
			{Host: "direct.test", Namespace: "shop", Service: "web", Port: port},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Stop)
	c := proxy.Client(30 * time.Second)

	// The Service has no endpoint yet: the request waits in the proxy's retries while the
	// endpoints appear, one ready and one not.
	answered := make(chan string, 1)
	go func() {
		resp, err := c.Get("http://app.test/hello")
		if err != nil {
			answered <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answered <- fmt.Sprintf("%d %s", resp.StatusCode, body)
	}()
	// Let the request reach the proxy's retry loop before the endpoints exist.
	deadline := time.Now().Add(10 * time.Second)
	for gateCalls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if gateCalls.Load() == 0 {
		t.Fatalf("the proxy never called the gate:\n%s", proxy.Log())
	}
	if _, err := client.DiscoveryV1().EndpointSlices("shop").Create(ctx,
		endpointSlice("shop", "web", "web-1", map[string]bool{"127.0.0.2": true, "127.0.0.3": false}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := <-answered; got != "200 backend 127.0.0.2" {
		t.Fatalf("held request: %s, want the ready backend's 200\n%s", got, proxy.Log())
	}
	if want := "/auth?target=shop/deployment/web&service=shop/web&timeout=30s token=s3cret"; lastAuth.Load() != want {
		t.Errorf("the gate was called with %v, want %s", lastAuth.Load(), want)
	}

	for range 20 {
		resp, err := c.Get("http://direct.test/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if calls := gateCalls.Load(); calls != 1 {
		t.Errorf("the gate saw %d calls, want 1: the direct route must not call it", calls)
	}
	if n := notReady.hits.Load(); n != 0 {
		t.Errorf("the not-ready endpoint got %d requests", n)
	}
	if n := ready.hits.Load(); n != 21 {
		t.Errorf("the ready endpoint got %d requests, want 21", n)
	}
}
