package gate

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/generated/clientset/versioned/fake"
	"github.com/zerowake/zerowake/wake"
)

// readyRequest is a ScaleRequest for ref, Ready for minReplicas, signalled just now.
func readyRequest(ref v1alpha1.CrossVersionObjectReference, minReplicas int32) *v1alpha1.ScaleRequest {
	now := metav1.NewMicroTime(time.Now())
	return &v1alpha1.ScaleRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: ref.Name, Generation: 1},
		Spec:       v1alpha1.ScaleRequestSpec{ScaleTargetRef: ref, MinReplicas: minReplicas, RequestedAt: &now},
		Status: v1alpha1.ScaleRequestStatus{ObservedGeneration: 1, Phase: v1alpha1.PhaseReady, Replicas: minReplicas, ReadyReplicas: minReplicas,
			Conditions: []metav1.Condition{
				{Type: v1alpha1.ConditionScaled, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonScaledFromZero, ObservedGeneration: 1, LastTransitionTime: metav1.Now()},
				{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonTargetReady, ObservedGeneration: 1, LastTransitionTime: metav1.Now()},
			}},
	}
}

func startWakeClient(t *testing.T, cs *fake.Clientset) *wake.Client {
	t.Helper()
	client := wake.New(cs, wake.Options{})
	if err := client.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Stop)
	return client
}

func writesOf(cs *fake.Clientset) []string {
	var writes []string
	for _, a := range cs.Actions() {
		if v := a.GetVerb(); v != "list" && v != "watch" && v != "get" {
			writes = append(writes, v+" "+a.GetResource().Resource)
		}
	}
	return writes
}

// The fast path lets a call through only when the request is Ready for the route's own target:
// a Ready StatefulSet shop/web does not let a route for the Deployment shop/web through (and
// the gate writes nothing for another workload's request).
func TestFastPathChecksTheKind(t *testing.T) {
	cs := fake.NewSimpleClientset(readyRequest(wake.StatefulSet("shop", "web").Ref(), 1))
	g := New(startWakeClient(t, cs), Config{}, nil, logr.Discard())
	a := g.Check(context.Background(), route(time.Second, web), "GET", "")
	if a.Outcome.Passes() {
		t.Fatalf("a route for Deployment shop/web passed on the StatefulSet's Ready request: %+v", a)
	}
	if a.Outcome != OutcomeFailed || a.Reason != "Mismatch" {
		t.Errorf("answer %+v, want failed Mismatch", a)
	}
	if w := writesOf(cs); len(w) != 0 {
		t.Errorf("writes %v for another workload's request", w)
	}
}

// A request Ready for 1 does not let a route for web:3 through at once: the gate raises the
// request to 3 and waits for it. (The fake clientset does not move metadata.generation on a
// patch, so the raised request reads Ready at once here; the answer is woken, not awake.)
func TestFastPathChecksTheReplicas(t *testing.T) {
	cs := fake.NewSimpleClientset(readyRequest(web.Ref(), 1))
	g := New(startWakeClient(t, cs), Config{}, nil, logr.Discard())
	three := web
	three.MinReplicas = 3
	a := g.Check(context.Background(), route(100*time.Millisecond, three), "GET", "")
	if a.Outcome == OutcomeAwake {
		t.Fatalf("a route for web:3 passed on a request Ready for 1: %+v", a)
	}
	if w := writesOf(cs); len(w) != 1 || w[0] != "patch scalerequests" {
		t.Fatalf("writes %v, want one patch raising minReplicas", w)
	}
	sr, err := cs.ZerowakeV1alpha1().ScaleRequests("shop").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil || sr.Spec.MinReplicas != 3 {
		t.Fatalf("request after the call: %v %+v; want minReplicas 3", err, sr.Spec)
	}
}

// A pass answered from a cache that has not seen an idler's scale-down yet is not lost: when the
// informer then shows the request Idle for that signal, the client signals again by itself.
func TestFastPathPassIsNotLostToAStaleCache(t *testing.T) {
	sr := readyRequest(web.Ref(), 1)
	cs := fake.NewSimpleClientset(sr)
	client := startWakeClient(t, cs)
	g := New(client, Config{}, nil, logr.Discard())
	if a := g.Check(context.Background(), route(time.Second, web), "GET", ""); a.Outcome != OutcomeAwake {
		t.Fatalf("answer %+v, want awake", a)
	}
	idle := sr.DeepCopy()
	idle.Status.Phase = v1alpha1.PhaseIdle
	idle.Status.Conditions[1] = metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse,
		Reason: v1alpha1.ReasonTargetScaledDown, ObservedGeneration: 1, LastTransitionTime: metav1.Now()}
	if _, err := cs.ZerowakeV1alpha1().ScaleRequests("shop").UpdateStatus(context.Background(), idle, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the re-signal", func() bool {
		for _, w := range writesOf(cs) {
			if w == "patch scalerequests" {
				return true
			}
		}
		return false
	})
}
