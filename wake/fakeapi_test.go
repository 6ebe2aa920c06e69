package wake_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/generated/clientset/versioned/fake"
	"github.com/zerowake/zerowake/wake"
)

var srGVR = v1alpha1.SchemeGroupVersion.WithResource("scalerequests")

// t0 is microsecond-aligned so requestedAt survives a JSON round trip unchanged.
var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// fakeAPI is the generated fake clientset with reactors that make ScaleRequests behave like the
// real API server where the wake client depends on it: uid, creationTimestamp and generation
// are set on create, a merge patch of spec moves generation, and status is only written through
// the status subresource. It counts requests by verb.
type fakeAPI struct {
	*fake.Clientset
	clock *clocktesting.FakeClock

	mu     sync.Mutex
	counts map[string]int
	uids   atomic.Int64
}

func newFakeAPI(objs ...runtime.Object) *fakeAPI {
	f := &fakeAPI{
		Clientset: fake.NewSimpleClientset(objs...),
		clock:     clocktesting.NewFakeClock(t0),
		counts:    map[string]int{},
	}
	tracker := f.Tracker()

	f.PrependReactor("update", "scalerequests", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ua := a.(k8stesting.UpdateAction)
		if ua.GetSubresource() != "status" {
			return false, nil, nil
		}
		in := ua.GetObject().(*v1alpha1.ScaleRequest)
		old, err := tracker.Get(srGVR, in.Namespace, in.Name)
		if err != nil {
			return true, nil, err
		}
		out := old.(*v1alpha1.ScaleRequest).DeepCopy()
		out.Status = *in.Status.DeepCopy()
		if err := tracker.Update(srGVR, out, out.Namespace); err != nil {
			return true, nil, err
		}
		return true, out.DeepCopy(), nil
	})
	f.PrependReactor("patch", "scalerequests", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pa := a.(k8stesting.PatchAction)
		if pa.GetSubresource() != "" || pa.GetPatchType() != types.MergePatchType {
			return true, nil, fmt.Errorf("fakeAPI: unexpected patch %s %q", pa.GetPatchType(), pa.GetSubresource())
		}
		old, err := tracker.Get(srGVR, pa.GetNamespace(), pa.GetName())
		if err != nil {
			return true, nil, err
		}
		oldSR := old.(*v1alpha1.ScaleRequest)
		js, err := json.Marshal(oldSR)
		if err != nil {
			return true, nil, err
		}
		merged, err := jsonpatch.MergePatch(js, pa.GetPatch())
		if err != nil {
			return true, nil, err
		}
		out := &v1alpha1.ScaleRequest{}
		if err := json.Unmarshal(merged, out); err != nil {
			return true, nil, err
		}
		out.Status = *oldSR.Status.DeepCopy() // the main resource ignores status
		out.ObjectMeta = *oldSR.ObjectMeta.DeepCopy()
		if !equality.Semantic.DeepEqual(oldSR.Spec, out.Spec) {
			out.Generation++
		}
		if err := tracker.Update(srGVR, out, out.Namespace); err != nil {
			return true, nil, err
		}
		return true, out.DeepCopy(), nil
	})
	f.PrependReactor("create", "scalerequests", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sr := a.(k8stesting.CreateAction).GetObject().(*v1alpha1.ScaleRequest)
		sr.UID = types.UID(fmt.Sprintf("uid-%d", f.uids.Add(1)))
		sr.Generation = 1
		sr.CreationTimestamp = metav1.NewTime(f.clock.Now())
		sr.Status = v1alpha1.ScaleRequestStatus{}
		return false, nil, nil
	})
	// Counting runs first.
	f.PrependReactor("*", "scalerequests", func(a k8stesting.Action) (bool, runtime.Object, error) {
		f.count(a.GetVerb())
		return false, nil, nil
	})
	f.PrependWatchReactor("scalerequests", func(a k8stesting.Action) (bool, watch.Interface, error) {
		f.count("watch")
		return false, nil, nil
	})
	return f
}

// intercept answers verb requests with fn (which must handle them), counting them first.
func (f *fakeAPI) intercept(verb string, fn func(a k8stesting.Action) (runtime.Object, error)) {
	f.PrependReactor(verb, "scalerequests", func(a k8stesting.Action) (bool, runtime.Object, error) {
		f.count(a.GetVerb())
		obj, err := fn(a)
		return true, obj, err
	})
}

func (f *fakeAPI) count(verb string) {
	f.mu.Lock()
	f.counts[verb]++
	f.mu.Unlock()
}

// writes returns the number of create and patch requests so far.
func (f *fakeAPI) writes() (creates, patches int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts["create"], f.counts["patch"]
}

func (f *fakeAPI) reads() (gets, lists int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts["get"], f.counts["list"]
}

func (f *fakeAPI) get(t testing.TB, ns, name string) *v1alpha1.ScaleRequest {
	t.Helper()
	obj, err := f.Tracker().Get(srGVR, ns, name)
	if err != nil {
		t.Fatalf("get %s/%s: %v", ns, name, err)
	}
	return obj.(*v1alpha1.ScaleRequest)
}

// setStatus plays the controller: it writes status for the object's current generation.
func (f *fakeAPI) setStatus(t testing.TB, ns, name string, mutate func(sr *v1alpha1.ScaleRequest)) {
	t.Helper()
	sr := f.get(t, ns, name).DeepCopy()
	sr.Status.ObservedGeneration = sr.Generation
	mutate(sr)
	if _, err := f.ZerowakeV1alpha1().ScaleRequests(ns).UpdateStatus(context.Background(), sr, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update status: %v", err)
	}
}

// markReady writes a Ready status for the current generation.
func (f *fakeAPI) markReady(t testing.TB, ns, name string, coldStart time.Duration) {
	t.Helper()
	f.setStatus(t, ns, name, func(sr *v1alpha1.ScaleRequest) {
		g := sr.Generation
		sr.Status.Phase = v1alpha1.PhaseReady
		sr.Status.Replicas, sr.Status.ReadyReplicas = sr.Spec.MinReplicas, sr.Spec.MinReplicas
		sr.Status.ColdStartDuration = &metav1.Duration{Duration: coldStart}
		sr.Status.Conditions = []metav1.Condition{
			{Type: v1alpha1.ConditionScaled, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonScaledFromZero, ObservedGeneration: g},
			{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonTargetReady, ObservedGeneration: g},
		}
	})
}

// markFailed writes a Failed status for the current generation with the reason on cond.
func (f *fakeAPI) markFailed(t testing.TB, ns, name, cond, reason, msg string) {
	t.Helper()
	f.setStatus(t, ns, name, func(sr *v1alpha1.ScaleRequest) {
		g := sr.Generation
		sr.Status.Phase = v1alpha1.PhaseFailed
		scaled := metav1.Condition{Type: v1alpha1.ConditionScaled, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonScaledFromZero, ObservedGeneration: g}
		ready := metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonWaitingForReplicas, ObservedGeneration: g}
		if cond == v1alpha1.ConditionScaled {
			scaled = metav1.Condition{Type: cond, Status: metav1.ConditionFalse, Reason: reason, Message: msg, ObservedGeneration: g}
		} else {
			ready = metav1.Condition{Type: cond, Status: metav1.ConditionFalse, Reason: reason, Message: msg, ObservedGeneration: g}
		}
		sr.Status.Conditions = []metav1.Condition{scaled, ready}
	})
}

// startClient starts a wake client on f and stops it at the end of the test.
func startClient(t testing.TB, f *fakeAPI, opts wake.Options) *wake.Client {
	t.Helper()
	if opts.Clock == nil {
		opts.Clock = f.clock
	}
	c := wake.New(f, opts)
	// Start's context lives as long as the client: cancelling it stops the client.
	if err := c.Start(context.Background()); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(c.Stop)
	return c
}

// eventually waits (bounded, not timed) for cond, which reads informer state.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
