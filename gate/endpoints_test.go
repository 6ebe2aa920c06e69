package gate

import (
	"context"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/zerowake/zerowake/wake"
)

// endpoint is a pod's endpoint at address; ready nil leaves the condition unset.
func endpoint(pod, address string, ready *bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{address}, Conditions: discoveryv1.EndpointConditions{Ready: ready},
		TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: pod, UID: types.UID("uid-" + pod)}}
}

func slice(name, service string, family discoveryv1.AddressType, endpoints ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: family, Endpoints: endpoints,
	}
}

func TestReadyEndpointsCountsDistinctReadyEndpoints(t *testing.T) {
	yes, no := ptr.To(true), ptr.To(false)
	for _, tt := range []struct {
		name   string
		slices []*discoveryv1.EndpointSlice
		want   int
	}{
		{"none", nil, 0},
		{"ready true and unset count, false does not", []*discoveryv1.EndpointSlice{
			slice("a", "web", discoveryv1.AddressTypeIPv4, endpoint("p1", "10.0.0.1", yes), endpoint("p2", "10.0.0.2", nil), endpoint("p3", "10.0.0.3", no)),
		}, 2},
		// The slices of one Service are split by port set: a pod listed twice is one endpoint.
		{"a pod in two port sets counts once", []*discoveryv1.EndpointSlice{
			slice("a", "web", discoveryv1.AddressTypeIPv4, endpoint("p1", "10.0.0.1", yes)),
			slice("b", "web", discoveryv1.AddressTypeIPv4, endpoint("p1", "10.0.0.1", yes), endpoint("p2", "10.0.0.2", yes)),
		}, 2},
		{"a dual-stack pod counts once", []*discoveryv1.EndpointSlice{
			slice("a", "web", discoveryv1.AddressTypeIPv4, endpoint("p1", "10.0.0.1", yes)),
			slice("b", "web", discoveryv1.AddressTypeIPv6, endpoint("p1", "fd00::1", yes)),
		}, 1},
		{"without targetRef, by address", []*discoveryv1.EndpointSlice{
			slice("a", "web", discoveryv1.AddressTypeIPv4,
				discoveryv1.Endpoint{Addresses: []string{"192.0.2.1"}}, discoveryv1.Endpoint{Addresses: []string{"192.0.2.1"}},
				discoveryv1.Endpoint{Addresses: []string{"192.0.2.2"}}, discoveryv1.Endpoint{}),
		}, 2},
	} {
		if got := readyEndpoints(tt.slices); got != tt.want {
			t.Errorf("%s: %d ready endpoints, want %d", tt.name, got, tt.want)
		}
	}
}

func TestTrimSliceKeepsWhatTheCountReads(t *testing.T) {
	s := slice("a", "web", discoveryv1.AddressTypeIPv4, endpoint("p1", "10.0.0.1", ptr.To(true)), endpoint("p2", "10.0.0.2", ptr.To(false)))
	s.Labels["endpointslice.kubernetes.io/managed-by"] = "endpointslice-controller.k8s.io"
	s.Endpoints[0].NodeName = ptr.To("node-1")
	s.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kcm"}}
	trimmed, err := trimSlice(s)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := trimSlice(trimmed)
	for _, obj := range []any{trimmed, again} {
		got := obj.(*discoveryv1.EndpointSlice)
		if readyEndpoints([]*discoveryv1.EndpointSlice{got}) != 1 || got.Labels[discoveryv1.LabelServiceName] != "web" || got.Name != "a" {
			t.Errorf("trimmed slice lost what the count reads: %+v", got)
		}
		if len(got.Labels) != 1 || got.ManagedFields != nil || got.Endpoints[0].NodeName != nil {
			t.Errorf("trimmed slice keeps what the gate never reads: %+v", got)
		}
	}
}

func newTestWatcher(t *testing.T, cs *fake.Clientset, opts EndpointWatcherOptions) *EndpointWatcher {
	t.Helper()
	w := NewEndpointWatcher(cs, opts)
	t.Cleanup(w.Stop)
	return w
}

// synced waits until the Service's informer has listed, so that later changes reach it.
func synced(t *testing.T, w *EndpointWatcher, s ServiceRef) {
	t.Helper()
	if _, err := w.Ready(s); err != nil {
		t.Fatal(err)
	}
	waitFor(t, s.String()+"'s cache", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		f := w.services[ServiceRef{Namespace: s.Namespace, Name: s.Name}]
		return f != nil && f.informer.HasSynced()
	})
}

var webService = ServiceRef{Namespace: "shop", Name: "web", MinReady: 1}

// A wait is released by the watch event that brings a ready endpoint, and only by it: a slice
// whose endpoint is not ready, or another Service's slice, does not release it.
func TestWatcherReleasesAWaitWhenTheSliceListsAReadyEndpoint(t *testing.T) {
	cs := fake.NewClientset()
	w := newTestWatcher(t, cs, EndpointWatcherOptions{})
	synced(t, w, webService)
	done := make(chan error, 1)
	go func() {
		_, err := w.WaitReady(context.Background(), webService)
		done <- err
	}()
	ctx := context.Background()
	slices := cs.DiscoveryV1().EndpointSlices("shop")
	if _, err := slices.Create(ctx, slice("other-1", "other", discoveryv1.AddressTypeIPv4, endpoint("o1", "10.0.1.1", nil)), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s := slice("web-1", "web", discoveryv1.AddressTypeIPv4, endpoint("p1", "10.0.0.1", ptr.To(false)))
	if _, err := slices.Create(ctx, s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the slice in the cache", func() bool { c, _ := w.Ready(webService); return c.Slices == 1 })
	if c, _ := w.Ready(webService); c.Ready != 0 {
		t.Fatalf("counted %+v: another Service's slice or a not-ready endpoint", c)
	}
	select {
	case err := <-done:
		t.Fatalf("the wait ended (%v) with no ready endpoint listed", err)
	default:
	}
	s.Endpoints[0].Conditions.Ready = ptr.To(true)
	if _, err := slices.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("wait: %v", err)
	}
	if c, _ := w.Ready(webService); c != (EndpointCount{Ready: 1, Slices: 1}) {
		t.Errorf("count %+v, want 1 ready in 1 slice", c)
	}
}

// Each Service is listed and watched on its own, in its namespace, by its label: nothing is
// read cluster-wide, and a Service no route names is never read.
func TestWatcherReadsOnlyTheNamedServices(t *testing.T) {
	cs := fake.NewClientset()
	w := newTestWatcher(t, cs, EndpointWatcherOptions{})
	synced(t, w, webService)
	synced(t, w, ServiceRef{Namespace: "blog", Name: "posts", MinReady: 1})
	var reads []string
	for _, a := range cs.Actions() {
		if a.GetResource().Resource != "endpointslices" {
			continue
		}
		var selector string
		switch a := a.(type) {
		case clienttesting.ListAction:
			selector = a.GetListRestrictions().Labels.String()
		case clienttesting.WatchAction:
			selector = a.GetWatchRestrictions().Labels.String()
		}
		reads = append(reads, a.GetVerb()+" "+a.GetNamespace()+" "+selector)
	}
	want := map[string]bool{
		"list shop kubernetes.io/service-name=web": true, "watch shop kubernetes.io/service-name=web": true,
		"list blog kubernetes.io/service-name=posts": true, "watch blog kubernetes.io/service-name=posts": true,
	}
	if len(reads) != len(want) {
		t.Errorf("reads %v, want a list and a watch per Service", reads)
	}
	for _, r := range reads {
		if !want[r] {
			t.Errorf("read %q: not one Service's slices", r)
		}
	}
}

// A Service outside the served namespaces, or one more than the cap, is refused without a read.
func TestWatcherBoundsWhatItFollows(t *testing.T) {
	cs := fake.NewClientset()
	w := newTestWatcher(t, cs, EndpointWatcherOptions{Namespaces: []string{"shop"}, MaxServices: 2})
	if _, err := w.Ready(ServiceRef{Namespace: "other", Name: "web"}); !errors.Is(err, wake.ErrNamespaceNotWatched) {
		t.Errorf("a Service in a namespace not served: %v", err)
	}
	for _, name := range []string{"a", "b", "a"} {
		if _, err := w.Ready(ServiceRef{Namespace: "shop", Name: name}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if _, err := w.Ready(ServiceRef{Namespace: "shop", Name: "c"}); !errors.Is(err, ErrTooManyServices) {
		t.Errorf("a third Service with a cap of 2: %v", err)
	}
	if _, err := w.WaitReady(context.Background(), ServiceRef{Namespace: "shop", Name: "c", MinReady: 1}); !errors.Is(err, ErrTooManyServices) {
		t.Errorf("waiting on a third Service with a cap of 2: %v", err)
	}
	if n := w.Followed(); n != 2 {
		t.Errorf("following %d Services, want 2", n)
	}
}

// A Service no call named for Idle stops being followed, unless a call still waits on it; a
// later call follows it again.
func TestWatcherStopsFollowingIdleServices(t *testing.T) {
	clock := clocktesting.NewFakePassiveClock(time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC))
	cs := fake.NewClientset()
	w := newTestWatcher(t, cs, EndpointWatcherOptions{Idle: time.Minute, Clock: clock})
	synced(t, w, webService)
	waiting := ServiceRef{Namespace: "shop", Name: "waited-on", MinReady: 1}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := w.WaitReady(ctx, waiting)
		done <- err
	}()
	waitFor(t, "the wait", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		f := w.services[ServiceRef{Namespace: "shop", Name: "waited-on"}]
		return f != nil && f.waiters == 1
	})

	clock.SetTime(clock.Now().Add(59 * time.Second))
	w.sweep()
	if n := w.Followed(); n != 2 {
		t.Fatalf("following %d Services before Idle passed, want 2", n)
	}
	clock.SetTime(clock.Now().Add(time.Second))
	w.sweep()
	if n := w.Followed(); n != 1 {
		t.Fatalf("following %d Services after Idle, want only the one a call waits on", n)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("wait: %v", err)
	}
	// The wait's end counts as a use: the Service is followed for Idle after it.
	w.sweep()
	if n := w.Followed(); n != 1 {
		t.Fatalf("following %d Services right after the wait ended, want 1", n)
	}
	clock.SetTime(clock.Now().Add(time.Minute))
	w.sweep()
	if n := w.Followed(); n != 0 {
		t.Fatalf("following %d Services after Idle, want 0", n)
	}

	lists := func() (n int) {
		for _, a := range cs.Actions() {
			if a.GetVerb() == "list" && a.GetResource().Resource == "endpointslices" {
				n++
			}
		}
		return n
	}
	before := lists()
	synced(t, w, webService)
	if lists() != before+1 {
		t.Errorf("a Service named again was not listed again (%d lists, then %d)", before, lists())
	}
}

func TestWatcherStopEndsWaits(t *testing.T) {
	w := NewEndpointWatcher(fake.NewClientset(), EndpointWatcherOptions{})
	done := make(chan error, 1)
	go func() {
		_, err := w.WaitReady(context.Background(), webService)
		done <- err
	}()
	waitFor(t, "the wait", func() bool { return w.Followed() == 1 })
	w.Stop()
	if err := <-done; !errors.Is(err, wake.ErrStopped) {
		t.Fatalf("wait after Stop: %v", err)
	}
	if _, err := w.Ready(webService); !errors.Is(err, wake.ErrStopped) {
		t.Errorf("Ready after Stop: %v", err)
	}
}
