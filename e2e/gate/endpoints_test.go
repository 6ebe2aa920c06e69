package gate

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/zerowake/zerowake/hack/localcluster"
)

// TestHeldUntilTheServiceListsThePod: a route that names the Service its proxy sends to is held
// while the target's pods are ready but the Service's EndpointSlices do not list them yet (the
// Service's selector matches none of them), and passes once the real EndpointSlice controller
// lists them (the selector patched to match). A route naming no Service passes on the target's
// ready replicas alone, as before.
func TestHeldUntilTheServiceListsThePod(t *testing.T) {
	ns := localcluster.NewNamespace(t, cluster)
	ctx := context.Background()
	createIdle(t, ns, "web", true, false)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web-not-yet"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	if _, err := kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	target := "target=" + ns + "/deployment/web"
	routed := startCaddy(t, target+"&service="+ns+"/web&timeout=90s")
	witness := startCaddy(t, target+"&timeout=90s")
	probe := startCaddy(t, target+"&service="+ns+"/web&timeout=2s")

	held := make(chan reply, 1)
	go func() {
		r, err := fetch(ctx, http.DefaultClient, routed+"/held")
		if err != nil {
			r = reply{status: -1, body: err.Error()}
		}
		held <- r
	}()

	// The route naming no Service passes once the gate has seen the target Ready.
	if r := get(t, witness+"/witness"); r.status != http.StatusOK {
		t.Fatalf("the route without a Service: %d %q", r.status, r.body)
	}
	podsReady := time.Now()
	if _, ready := deploymentReady(t, ns, "web"); ready != 1 {
		t.Fatalf("%d ready replicas after the route without a Service passed, want 1", ready)
	}
	if n := readyInSlices(t, ns, "web"); n != 0 {
		t.Fatalf("the Service's slices list %d ready endpoints before its selector matches any pod", n)
	}
	// The gate has seen the target Ready (the witness passed before this call was sent); a call
	// on the route naming the Service is still not let through: held to its 2s timeout, then 503.
	if r := get(t, probe+"/probe"); r.status != http.StatusServiceUnavailable || r.header.Get("X-Zerowake-Reason") != "NotRoutableYet" {
		t.Fatalf("with the target ready and no pod in the Service's slices: got %d %v %q, want 503 NotRoutableYet", r.status, r.header, r.body)
	} else if !strings.Contains(r.body, "lists 0 of the 1 ready endpoints") {
		t.Errorf("body %q", r.body)
	}
	// The probe's 2s passed since the witness was let through by the same Ready the held call
	// would have been released by, had the gate looked at the target alone.
	select {
	case r := <-held:
		t.Fatalf("the call naming the Service was answered %d %q before the Service listed the pod", r.status, r.body)
	default:
	}
	if n, err := gateProc.Metric("zerowake_gate_held_requests"); err != nil || n < 1 {
		t.Errorf("held calls %v (%v), want the call naming the Service held", n, err)
	}

	patch := []byte(`{"spec":{"selector":{"app":"web"}}}`)
	if _, err := kube.CoreV1().Services(ns).Patch(ctx, "web", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	patched := time.Now()
	var r reply
	select {
	case r = <-held:
	case <-time.After(90 * time.Second):
		t.Fatal("the held call was not answered within its route's 90s timeout")
	}
	if r.status != http.StatusOK || r.body != "backend: GET /held\n" {
		t.Fatalf("after the Service selected the pods: %d %q %v\ngate log:\n%s", r.status, r.body, r.header, gateProc.Tail(10))
	}
	if n := readyInSlices(t, ns, "web"); n != 1 {
		t.Errorf("the Service's slices list %d ready endpoints after the call passed, want 1", n)
	}
	t.Logf("held %s after the pods were ready; passed %s after the Service's selector was patched",
		time.Since(podsReady).Round(time.Millisecond), time.Since(patched).Round(time.Millisecond))

	// Routable now: calls pass from the gate's caches, with no API request.
	before := gateRequests(t, "")
	for range 50 {
		if r := get(t, routed+"/again"); r.status != http.StatusOK {
			t.Fatalf("a call once routable: %d %v %q", r.status, r.header, r.body)
		}
	}
	if extra := gateRequests(t, "") - before; extra != 0 {
		t.Errorf("50 calls for a routable Service made %v API requests, want 0", extra)
	}
}

// readyInSlices counts the distinct ready endpoints the Service's EndpointSlices list.
func readyInSlices(t *testing.T, ns, service string) int {
	t.Helper()
	list, err := kube.DiscoveryV1().EndpointSlices(ns).List(context.Background(), metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, s := range list.Items {
		for _, e := range s.Endpoints {
			if len(e.Addresses) > 0 && (e.Conditions.Ready == nil || *e.Conditions.Ready) {
				seen[e.Addresses[0]] = true
			}
		}
	}
	return len(seen)
}
