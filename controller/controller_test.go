package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	core "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2/ktesting"
	testingclock "k8s.io/utils/clock/testing"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/generated/clientset/versioned/fake"
	"github.com/zerowake/zerowake/generated/informers/externalversions"
	informers "github.com/zerowake/zerowake/generated/informers/externalversions/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/scaling"
)

var (
	t0          = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	deployments = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	webID       = "shop/apps/Deployment/web"
)

const (
	window       = 30 * time.Second
	readyTimeout = 5 * time.Minute
)

// fakeScaler answers with canned results and records the calls.
type fakeScaler struct {
	mu      sync.Mutex
	result  scaling.Result // of ScaleUp
	current scaling.Result // of Current
	err     error
	calls   []scaling.Target // ScaleUp calls
	reads   []scaling.Target // Current calls
	// lastWrite is what the target records of the controller's last /scale write.
	lastWrite      scaling.Write
	lastWriteFound bool
	lastWriteReads int
}

func (s *fakeScaler) ScaleUp(_ context.Context, target scaling.Target, _ int32) (scaling.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, target)
	return s.result, s.err
}

func (s *fakeScaler) Current(_ context.Context, target scaling.Target) (scaling.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads = append(s.reads, target)
	return s.current, s.err
}

func (s *fakeScaler) LastWrite(context.Context, scaling.Target, schema.GroupVersionResource) (scaling.Write, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastWriteReads++
	return s.lastWrite, s.lastWriteFound, nil
}

func (s *fakeScaler) Resolve(context.Context, scaling.Target) (schema.GroupVersionResource, error) {
	return deployments, nil
}

// fakeInventory holds the workloads a test marked, by namespace/name.
type fakeInventory struct {
	mu      sync.Mutex
	entries map[string]scaling.InventoryEntry
	tracked []schema.GroupKind
}

func (i *fakeInventory) Track(_ context.Context, gk schema.GroupKind, _ schema.GroupVersionResource) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.tracked = append(i.tracked, gk)
}

func (i *fakeInventory) Lookup(_ context.Context, _ schema.GroupKind, _ schema.GroupVersionResource, namespace, name string) (scaling.InventoryEntry, bool, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	e, ok := i.entries[namespace+"/"+name]
	return e, ok, nil
}

func (i *fakeInventory) set(name string, e scaling.InventoryEntry) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.entries["shop/"+name] = e
}

// fakeWatcher holds target states set by the test and records watch calls.
type fakeWatcher struct {
	mu      sync.Mutex
	states  map[string]scaling.TargetState
	watched map[string]bool
	forgot  []string
}

func (w *fakeWatcher) Watch(_ context.Context, id string, _ schema.GroupVersionResource, _, _, _ string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.watched[id] = true
}

func (w *fakeWatcher) Forget(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.watched, id)
	w.forgot = append(w.forgot, id)
}

func (w *fakeWatcher) State(id string) (scaling.TargetState, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, ok := w.states[id]
	return s, ok
}

type fixture struct {
	t         *testing.T
	ctx       context.Context
	client    *fake.Clientset
	scaler    *fakeScaler
	watcher   *fakeWatcher
	recorder  *record.FakeRecorder
	clock     *testingclock.FakeClock
	ctrl      *Controller
	informer  informers.ScaleRequestInformer
	inventory *fakeInventory
}

func newFixture(t *testing.T, allowedKinds string, objects ...*v1alpha1.ScaleRequest) *fixture {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	var objs []runtime.Object
	for _, o := range objects {
		objs = append(objs, o)
	}
	f := &fixture{
		t:         t,
		ctx:       ctx,
		client:    fake.NewSimpleClientset(objs...),
		scaler:    &fakeScaler{},
		watcher:   &fakeWatcher{states: map[string]scaling.TargetState{}, watched: map[string]bool{}},
		recorder:  record.NewFakeRecorder(100),
		clock:     testingclock.NewFakeClock(t0),
		inventory: &fakeInventory{entries: map[string]scaling.InventoryEntry{}},
	}
	kinds, err := ParseAllowedKinds(allowedKinds)
	if err != nil {
		t.Fatal(err)
	}
	factory := externalversions.NewSharedInformerFactory(f.client, 0)
	f.informer = factory.Zerowake().V1alpha1().ScaleRequests()
	f.ctrl, err = New(f.client, map[string]informers.ScaleRequestInformer{"": f.informer}, f.scaler,
		func(func(string)) TargetWatcher { return f.watcher }, f.recorder, nil, f.clock,
		Config{RescaleDuration: window, ReadyTimeout: readyTimeout, AllowedKinds: kinds, Inventory: f.inventory})
	if err != nil {
		t.Fatal(err)
	}
	// Like sample-controller: fill the indexer directly instead of running the informer.
	for _, o := range objects {
		if err := f.put(o); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(f.ctrl.queue.ShutDown)
	f.client.ClearActions()
	return f
}

// put stores sr as the informer would deliver it: in its cache and in the target index its
// event handlers keep.
func (f *fixture) put(sr *v1alpha1.ScaleRequest) error {
	indexer := f.informer.Informer().GetIndexer()
	var old *v1alpha1.ScaleRequest
	if obj, exists, _ := indexer.Get(sr); exists {
		old = obj.(*v1alpha1.ScaleRequest)
	}
	if err := indexer.Update(sr); err != nil {
		return err
	}
	f.ctrl.targets.update(old, sr)
	return nil
}

// remove deletes sr as the informer would.
func (f *fixture) remove(sr *v1alpha1.ScaleRequest) error {
	if err := f.informer.Informer().GetIndexer().Delete(sr); err != nil {
		return err
	}
	f.ctrl.targets.update(sr, nil)
	return nil
}

// sync runs the sync handler for shop/web and returns its error.
func (f *fixture) sync() error {
	return f.ctrl.sync(f.ctx, cache.ObjectName{Namespace: "shop", Name: "web"})
}

// statusWrites returns the objects the controller wrote through the status subresource, and
// fails the test on any other write.
func (f *fixture) statusWrites() []*v1alpha1.ScaleRequest {
	f.t.Helper()
	var writes []*v1alpha1.ScaleRequest
	for _, action := range f.client.Actions() {
		if action.GetVerb() == "list" || action.GetVerb() == "watch" || action.GetVerb() == "get" {
			continue
		}
		update, ok := action.(core.UpdateAction)
		if !ok || action.GetSubresource() != "status" {
			f.t.Fatalf("unexpected write %s %s/%s: the controller writes only status", action.GetVerb(), action.GetResource().Resource, action.GetSubresource())
		}
		writes = append(writes, update.GetObject().(*v1alpha1.ScaleRequest))
	}
	return writes
}

// lastStatus returns the only status write, failing unless there is exactly one.
func (f *fixture) lastStatus() v1alpha1.ScaleRequestStatus {
	f.t.Helper()
	writes := f.statusWrites()
	if len(writes) != 1 {
		f.t.Fatalf("want 1 status write, got %d", len(writes))
	}
	return writes[0].Status
}

// events drains the recorded events.
func (f *fixture) events() []string {
	var out []string
	for {
		select {
		case e := <-f.recorder.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func (f *fixture) expectEvents(want ...string) {
	f.t.Helper()
	got := f.events()
	if len(got) != len(want) {
		f.t.Fatalf("events: want %d %q, got %d %q", len(want), want, len(got), got)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			f.t.Errorf("event %d: want prefix %q, got %q", i, want[i], got[i])
		}
	}
}

// expectRequeueAfter checks that the key comes back on the queue after d and not before.
func (f *fixture) expectRequeueAfter(d time.Duration) {
	f.t.Helper()
	f.clock.Step(d - time.Millisecond)
	if waitForQueue(f.ctrl, 20*time.Millisecond) {
		f.t.Fatalf("key requeued before %s", d)
	}
	f.clock.Step(time.Millisecond)
	if !waitForQueue(f.ctrl, 2*time.Second) {
		f.t.Fatalf("key not requeued after %s", d)
	}
}

// waitForQueue reports whether the queue holds an item within timeout (the delaying queue
// moves items on a goroutine after the fake clock steps).
func waitForQueue(c *Controller, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c.queue.Len() > 0 {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return c.queue.Len() > 0
}

func newRequest(kind string) *v1alpha1.ScaleRequest {
	apiVersion := "apps/v1"
	return &v1alpha1.ScaleRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Generation: 1, ResourceVersion: "1",
			CreationTimestamp: metav1.Time{Time: t0.Add(-100 * time.Millisecond)}},
		Spec: v1alpha1.ScaleRequestSpec{
			ScaleTargetRef: v1alpha1.CrossVersionObjectReference{APIVersion: apiVersion, Kind: kind, Name: "web"},
			MinReplicas:    1,
		},
	}
}

// scaledRequest is a request whose generation 1 was scaled at scaledAt and waits for readiness.
func scaledRequest(scaledAt time.Time) *v1alpha1.ScaleRequest {
	sr := newRequest("Deployment")
	sr.CreationTimestamp = metav1.Time{Time: scaledAt.Add(-100 * time.Millisecond)}
	zero := int32(0)
	sr.Status = v1alpha1.ScaleRequestStatus{
		ObservedGeneration: 1, Phase: v1alpha1.PhaseScaling, PreviousReplicas: &zero, Replicas: 1,
		LastScaleTime: &metav1.Time{Time: scaledAt},
		Conditions: []metav1.Condition{
			{Type: v1alpha1.ConditionScaled, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonScaledFromZero, ObservedGeneration: 1, LastTransitionTime: metav1.Time{Time: scaledAt}},
			{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonWaitingForReplicas, ObservedGeneration: 1,
				Message: "waiting for Deployment/web to have 1 ready replicas", LastTransitionTime: metav1.Time{Time: scaledAt}},
		},
	}
	return sr
}

func expectCondition(t *testing.T, status v1alpha1.ScaleRequestStatus, condType string, want metav1.ConditionStatus, reason string) {
	t.Helper()
	c := meta.FindStatusCondition(status.Conditions, condType)
	if c == nil {
		t.Fatalf("no %s condition in %+v", condType, status.Conditions)
	}
	if c.Status != want || c.Reason != reason {
		t.Fatalf("%s condition: want %s/%s, got %s/%s (%s)", condType, want, reason, c.Status, c.Reason, c.Message)
	}
}

func TestScaleFromZero(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, newRequest("Deployment"))
	f.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: 0, Replicas: 1, Scaled: true}

	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if len(f.scaler.calls) != 1 || f.scaler.calls[0].Ref.Name != "web" || f.scaler.calls[0].Namespace != "shop" {
		t.Fatalf("scaler calls: %+v", f.scaler.calls)
	}
	status := f.lastStatus()
	if status.Phase != v1alpha1.PhaseScaling || status.ObservedGeneration != 1 || status.Replicas != 1 ||
		status.PreviousReplicas == nil || *status.PreviousReplicas != 0 || !status.LastScaleTime.Time.Equal(t0) {
		t.Fatalf("status after scale: %+v", status)
	}
	expectCondition(t, status, v1alpha1.ConditionScaled, metav1.ConditionTrue, v1alpha1.ReasonScaledFromZero)
	expectCondition(t, status, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonWaitingForReplicas)
	if !f.watcher.watched[webID] {
		t.Fatalf("target not watched: %v", f.watcher.watched)
	}
	f.expectEvents("Normal ScaledFromZero Scaled Deployment/web from 0 to 1 replicas")
	// An active request is re-checked at least once per window.
	f.expectRequeueAfter(window)
}

func TestReadyFromWatchedState(t *testing.T) {
	sr := scaledRequest(t0)
	f := newFixture(t, DefaultAllowedKinds, sr)
	f.ctrl.hold(cache.ObjectName{Namespace: "shop", Name: "web"}, webID)
	f.watcher.watched[webID] = true
	f.clock.Step(250 * time.Millisecond)
	f.watcher.states[webID] = scaling.TargetState{Exists: true, Current: true, Replicas: 1, ReadyReplicas: 1}

	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if len(f.scaler.calls) != 0 {
		t.Fatalf("a served request must not be scaled again: %+v", f.scaler.calls)
	}
	status := f.lastStatus()
	if status.Phase != v1alpha1.PhaseReady || status.ReadyReplicas != 1 || status.ReadyTime == nil {
		t.Fatalf("status: %+v", status)
	}
	// Cold start runs from creation (no requestedAt): 100ms before t0 to t0+250ms.
	if status.ColdStartDuration == nil || status.ColdStartDuration.Duration != 350*time.Millisecond {
		t.Fatalf("cold start: %v", status.ColdStartDuration)
	}
	expectCondition(t, status, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonTargetReady)
	expectCondition(t, status, v1alpha1.ConditionScaled, metav1.ConditionTrue, v1alpha1.ReasonScaledFromZero)
	f.expectEvents("Normal TargetReady Deployment/web has 1/1 ready replicas, 350ms after the signal")
	if f.watcher.watched[webID] || f.ctrl.Active() != 0 {
		t.Fatalf("watch not released after Ready: watched=%v active=%d", f.watcher.watched, f.ctrl.Active())
	}
}

func TestStaleReadyCountIsNotReady(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, scaledRequest(t0))
	// The target's controller has not observed the scale yet: its ready count predates it.
	f.watcher.states[webID] = scaling.TargetState{Exists: true, Current: false, Replicas: 1, ReadyReplicas: 1}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	for _, w := range f.statusWrites() {
		if w.Status.Phase == v1alpha1.PhaseReady {
			t.Fatalf("became Ready on a stale ready count: %+v", w.Status)
		}
	}
}

func TestAlreadyScaledWritesNothingToTarget(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, newRequest("Deployment"))
	f.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: 3, Replicas: 3, Scaled: false}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	// The watch has not listed the target yet: its first answer decides the one status write.
	if n := len(f.statusWrites()); n != 0 {
		t.Fatalf("wrote status %d times before the target's readiness was known", n)
	}
	f.watcher.states[webID] = scaling.TargetState{Exists: true, Current: true, Replicas: 3, ReadyReplicas: 1}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	status := f.lastStatus()
	expectCondition(t, status, v1alpha1.ConditionScaled, metav1.ConditionTrue, v1alpha1.ReasonAlreadyScaled)
	if n := len(f.scaler.calls); n != 1 {
		t.Fatalf("asked /scale %d times for one signal", n)
	}
	if status.LastScaleTime != nil || status.Replicas != 3 || status.Phase != v1alpha1.PhaseReady || status.ColdStartDuration != nil {
		t.Fatalf("status: %+v", status)
	}
	// No scale happened: no scale event, and no cold start in the Ready one.
	f.expectEvents("Normal TargetReady Deployment/web has 1/1 ready replicas")
}

func TestNewSignalInsideWindowIsDeferred(t *testing.T) {
	sr := scaledRequest(t0.Add(-10 * time.Second))
	sr.Generation = 2 // requestedAt bumped
	sr.Status.Phase = v1alpha1.PhaseReady
	sr.Status.ReadyTime = &metav1.Time{Time: t0.Add(-9 * time.Second)}
	meta.SetStatusCondition(&sr.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue,
		Reason: v1alpha1.ReasonTargetReady, ObservedGeneration: 1})
	f := newFixture(t, DefaultAllowedKinds, sr)

	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if len(f.scaler.calls) != 0 {
		t.Fatalf("scaled inside the rescale window: %+v", f.scaler.calls)
	}
	status := f.lastStatus()
	if status.Phase != v1alpha1.PhasePending || status.ObservedGeneration != 2 {
		t.Fatalf("status: %+v", status)
	}
	expectCondition(t, status, v1alpha1.ConditionScaled, metav1.ConditionFalse, v1alpha1.ReasonRescaleWindow)
	if meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionReady) != nil || status.ReadyTime != nil {
		t.Fatalf("the previous signal's readiness was kept for the new one: %+v", status)
	}
	f.expectRequeueAfter(20 * time.Second) // the rest of the window: deferred, not dropped
}

func TestFightIsRescaledOncePerWindow(t *testing.T) {
	// Scaled 40s ago, and something set the target back to 0 since.
	f := newFixture(t, DefaultAllowedKinds, scaledRequest(t0.Add(-40*time.Second)))
	f.watcher.states[webID] = scaling.TargetState{Exists: true, Current: true, Replicas: 0}
	f.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: 0, Replicas: 1, Scaled: true}

	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if len(f.scaler.calls) != 1 {
		t.Fatalf("want one rescale, got %d", len(f.scaler.calls))
	}
	status := f.lastStatus()
	expectCondition(t, status, v1alpha1.ConditionScaled, metav1.ConditionTrue, v1alpha1.ReasonScaleFight)
	if !status.LastScaleTime.Time.Equal(t0) {
		t.Fatalf("last scale time not moved: %v", status.LastScaleTime)
	}
	f.expectEvents("Warning ScaleFight Deployment/web was set to 0 replicas by something else")
}

func TestFightInsideWindowIsDeferred(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, scaledRequest(t0.Add(-5*time.Second)))
	f.watcher.states[webID] = scaling.TargetState{Exists: true, Current: true, Replicas: 0}

	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if len(f.scaler.calls) != 0 {
		t.Fatalf("rescaled inside the window: %+v", f.scaler.calls)
	}
	status := f.lastStatus()
	expectCondition(t, status, v1alpha1.ConditionScaled, metav1.ConditionFalse, v1alpha1.ReasonScaleFight)
	f.expectEvents("Warning ScaleFight Deployment/web was set to 0 replicas by something else")
	f.expectRequeueAfter(25 * time.Second)
}

func TestScaleFailures(t *testing.T) {
	gr := schema.GroupResource{Group: "apps", Resource: "deployments"}
	for _, tc := range []struct {
		name    string
		err     error
		reason  string
		requeue time.Duration // 0: only a new signal can fix it
	}{
		{"target not found", &scaling.Error{Reason: scaling.ReasonTargetNotFound, Err: apierrors.NewNotFound(gr, "web")}, v1alpha1.ReasonTargetNotFound, window},
		{"kind unknown", &scaling.Error{Reason: scaling.ReasonKindUnknown, Err: errors.New("no match")}, v1alpha1.ReasonKindUnknown, window},
		{"no scale subresource", &scaling.Error{Reason: scaling.ReasonNoScaleSubresource, Err: errors.New("no /scale")}, v1alpha1.ReasonNoScaleSubresource, 0},
		{"forbidden", &scaling.Error{Reason: scaling.ReasonForbidden, Err: apierrors.NewForbidden(gr, "web", errors.New("rbac"))}, v1alpha1.ReasonForbidden, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, DefaultAllowedKinds, newRequest("Deployment"))
			f.scaler.err = tc.err
			if err := f.sync(); err != nil {
				t.Fatalf("a permanent failure must not be retried through the backoff: %v", err)
			}
			status := f.lastStatus()
			if status.Phase != v1alpha1.PhaseFailed {
				t.Fatalf("phase: %s", status.Phase)
			}
			expectCondition(t, status, v1alpha1.ConditionScaled, metav1.ConditionFalse, tc.reason)
			f.expectEvents("Warning " + tc.reason)
			if tc.requeue > 0 {
				// Someone else may fix it: a target created or a CRD installed is looked at
				// once per window (and at once on the inventory's event); RBAC, which nothing
				// announces, soon and then less often.
				f.expectRequeueAfter(tc.requeue)
			} else if waitForQueue(f.ctrl, 20*time.Millisecond) {
				t.Fatal("requeued a failure only a spec change can fix")
			}
		})
	}
}

func TestRepeatedFailureEmitsOneEvent(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, newRequest("Deployment"))
	f.scaler.err = &scaling.Error{Reason: scaling.ReasonTargetNotFound, Err: errors.New("not found")}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	written := f.statusWrites()[0]
	if err := f.put(written); err != nil {
		t.Fatal(err)
	}
	f.events()
	f.client.ClearActions()
	f.clock.Step(window)
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if len(f.scaler.calls) != 2 {
		t.Fatalf("want a re-check after the window, got %d scale calls", len(f.scaler.calls))
	}
	if n := len(f.statusWrites()); n != 0 {
		t.Fatalf("unchanged status written %d times", n)
	}
	f.expectEvents()
}

func TestKindNotAllowed(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, newRequest("ReplicaSet"))
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if len(f.scaler.calls) != 0 {
		t.Fatal("scaled a kind that is not allowed")
	}
	status := f.lastStatus()
	expectCondition(t, status, v1alpha1.ConditionScaled, metav1.ConditionFalse, v1alpha1.ReasonKindNotAllowed)
	f.expectEvents("Warning KindNotAllowed this controller is not allowed to scale ReplicaSet.apps")
}

func TestTransientFailureIsRetriedWithBackoff(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, newRequest("Deployment"))
	f.scaler.err = &scaling.Error{Reason: scaling.ReasonTransient, Err: apierrors.NewServiceUnavailable("etcd")}
	if err := f.sync(); err == nil {
		t.Fatal("a transient failure must return an error so the queue backs off")
	}
	if n := len(f.statusWrites()); n != 0 {
		t.Fatalf("transient failure wrote status %d times", n)
	}
}

func TestReadyTimeout(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, scaledRequest(t0.Add(-readyTimeout)))
	f.watcher.states[webID] = scaling.TargetState{Exists: true, Current: true, Replicas: 1, ReadyReplicas: 0}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	status := f.lastStatus()
	if status.Phase != v1alpha1.PhaseFailed {
		t.Fatalf("phase %s", status.Phase)
	}
	expectCondition(t, status, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonReadyTimeout)
	f.expectEvents("Warning ReadyTimeout Deployment/web did not get 1 ready replicas within 5m0s")
}

func TestWaitingRequeuesBeforeTimeout(t *testing.T) {
	// 10s before the ready timeout, the re-check comes at the timeout, not a window later.
	f := newFixture(t, DefaultAllowedKinds, scaledRequest(t0.Add(-readyTimeout+10*time.Second)))
	f.watcher.states[webID] = scaling.TargetState{Exists: true, Current: true, Replicas: 1}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if n := len(f.statusWrites()); n != 0 {
		t.Fatalf("status unchanged but written %d times", n)
	}
	f.expectRequeueAfter(10 * time.Second)
}

func TestTargetDeletedWhileScaling(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, scaledRequest(t0))
	f.watcher.states[webID] = scaling.TargetState{Exists: false}
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	status := f.lastStatus()
	expectCondition(t, status, v1alpha1.ConditionScaled, metav1.ConditionFalse, v1alpha1.ReasonTargetNotFound)
	if meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionReady) != nil {
		t.Fatal("Ready condition kept for a target that is gone")
	}
}

func TestSettledRequestCostsNothing(t *testing.T) {
	sr := scaledRequest(t0)
	sr.Status.Phase = v1alpha1.PhaseReady
	f := newFixture(t, DefaultAllowedKinds, sr)
	f.inventory.set("web", scaling.InventoryEntry{State: scaling.TargetState{Exists: true, Current: true, Replicas: 1, ReadyReplicas: 1}})
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if len(f.client.Actions()) != 0 || len(f.scaler.calls) != 0 || len(f.scaler.reads) != 0 {
		t.Fatalf("settled request caused API calls: %v, scale calls %d, reads %d", f.client.Actions(), len(f.scaler.calls), len(f.scaler.reads))
	}
}

func TestDeletedRequestReleasesWatch(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds)
	f.ctrl.hold(cache.ObjectName{Namespace: "shop", Name: "web"}, webID)
	f.watcher.watched[webID] = true
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if f.watcher.watched[webID] || f.ctrl.Active() != 0 {
		t.Fatal("watch kept for a deleted request")
	}
}

func TestSharedTargetWatchOutlivesOneRequest(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds)
	f.ctrl.hold(cache.ObjectName{Namespace: "shop", Name: "web"}, webID)
	f.ctrl.hold(cache.ObjectName{Namespace: "shop", Name: "web-2"}, webID)
	f.watcher.watched[webID] = true
	f.ctrl.release(cache.ObjectName{Namespace: "shop", Name: "web"})
	if !f.watcher.watched[webID] {
		t.Fatal("watch dropped while another request still waits on it")
	}
}

func TestOwnStatusWritesAreIgnored(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds)
	old := scaledRequest(t0)
	statusOnly := old.DeepCopy()
	statusOnly.ResourceVersion = "2"
	statusOnly.Status.Phase = v1alpha1.PhaseReady
	f.ctrl.onUpdate(old, statusOnly)
	if f.ctrl.queue.Len() != 0 {
		t.Fatal("a status-only update was queued")
	}
	f.ctrl.onUpdate(old, old.DeepCopy()) // resync: same resourceVersion
	if f.ctrl.queue.Len() != 0 {
		t.Fatal("a resync was queued")
	}

	bumped := old.DeepCopy()
	bumped.ResourceVersion, bumped.Generation = "3", 2
	f.ctrl.onUpdate(old, bumped)
	if f.ctrl.queue.Len() != 1 {
		t.Fatal("a new signal (generation bump) was not queued")
	}
}

func TestTargetChangeQueuesItsRequests(t *testing.T) {
	other := newRequest("Deployment")
	other.Name, other.Spec.ScaleTargetRef.Name = "api", "api"
	f := newFixture(t, DefaultAllowedKinds, scaledRequest(t0), other)
	f.ctrl.enqueueTarget(webID)
	if f.ctrl.queue.Len() != 1 {
		t.Fatalf("queue len %d, want only the request naming the target", f.ctrl.queue.Len())
	}
	key, _ := f.ctrl.queue.Get()
	if key.Name != "web" {
		t.Fatalf("queued %v", key)
	}
}

func TestStatusConflictIsReturned(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, newRequest("Deployment"))
	f.scaler.result = scaling.Result{Resource: deployments, Replicas: 1, Scaled: true}
	f.client.PrependReactor("update", "scalerequests", func(core.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewConflict(v1alpha1.Resource("scalerequests"), "web", fmt.Errorf("changed"))
	})
	if err := f.sync(); !apierrors.IsConflict(err) {
		t.Fatalf("want conflict so the key is retried, got %v", err)
	}
}

// A target found already up by the live read (something else raised it: a GitOps sync, a
// person) is Ready only once the cache holds that read: an older entry may still show the pods
// a sleep removed since, ready.
func TestAlreadyScaledIsReadyOnlyOnceTheCacheCaughtUpWithTheRead(t *testing.T) {
	f := newFixture(t, DefaultAllowedKinds, newRequest("Deployment"))
	f.ctrl.watcher = newInventoryFollower(f.inventory)
	f.scaler.result = scaling.Result{Resource: deployments, PreviousReplicas: 1, Replicas: 1, ResourceVersion: "45"}
	stale := scaling.InventoryEntry{ResourceVersion: "41", State: scaling.TargetState{Exists: true, Current: true, Replicas: 1, ReadyReplicas: 1}}
	f.inventory.set("web", stale)
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	for _, w := range f.statusWrites() {
		if w.Status.Phase == v1alpha1.PhaseReady {
			t.Fatalf("Ready from a cache entry (resourceVersion 41) older than the live read (45): %+v", w.Status)
		}
	}
	f.client.ClearActions()
	// The cache catches up: the raise's pod is not ready yet, then it is.
	f.inventory.set("web", scaling.InventoryEntry{ResourceVersion: "45", State: scaling.TargetState{Exists: true, Current: true, Replicas: 1}})
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	for _, w := range f.statusWrites() {
		if w.Status.Phase == v1alpha1.PhaseReady {
			t.Fatalf("Ready with no ready replica: %+v", w.Status)
		}
	}
	f.inventory.set("web", scaling.InventoryEntry{ResourceVersion: "46", State: scaling.TargetState{Exists: true, Current: true, Replicas: 1, ReadyReplicas: 1}})
	// Whatever the earlier passes wrote is what the informer holds now.
	for _, w := range f.statusWrites() {
		if err := f.put(w); err != nil {
			t.Fatal(err)
		}
	}
	f.client.ClearActions()
	if err := f.sync(); err != nil {
		t.Fatal(err)
	}
	if status := f.lastStatus(); status.Phase != v1alpha1.PhaseReady {
		t.Fatalf("phase %s once the cache shows the target ready at the read's version, want Ready", status.Phase)
	}
}
