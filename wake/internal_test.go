package wake

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/generated/clientset/versioned/fake"
)

func readySR(gen int64, cold time.Duration) *v1alpha1.ScaleRequest {
	return &v1alpha1.ScaleRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: "u1", Generation: gen},
		Spec:       v1alpha1.ScaleRequestSpec{ScaleTargetRef: Deployment("shop", "web").Ref(), MinReplicas: 1},
		Status: v1alpha1.ScaleRequestStatus{
			ObservedGeneration: gen, Phase: v1alpha1.PhaseReady,
			ColdStartDuration: &metav1.Duration{Duration: cold},
			Conditions: []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue,
				Reason: v1alpha1.ReasonTargetReady, ObservedGeneration: gen}},
		},
	}
}

// The informer may still hold the previous generation, Ready for that generation, after this
// client's bump returned: WaitReady must not take that for the new signal.
func TestWaitReadyWaitsForOwnWriteToReachTheCache(t *testing.T) {
	c := New(fake.NewSimpleClientset(), Options{})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	k := key{"shop", "web"}

	// State as it is right after a bump to generation 4 whose event has not arrived yet.
	c.onUpsert(readySR(3, time.Second))
	resp := readySR(4, 0)
	target := Deployment("shop", "web")
	c.record(k, &target, time.Now(), 1, resp, nil)

	var reports []Status
	res := make(chan error, 1)
	var cold time.Duration
	go func() {
		var err error
		cold, err = c.WaitReadyWithProgress(context.Background(), Deployment("shop", "web"), func(s Status) { reports = append(reports, s) })
		res <- err
	}()
	// Parked: a waiter channel exists for the key (it evaluated the stale object and waits).
	for {
		c.mu.Lock()
		_, parked := c.waiters[k]
		c.mu.Unlock()
		if parked {
			break
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-res:
		t.Fatalf("WaitReady returned %v, %v on the stale generation", cold, err)
	default:
	}

	c.onUpsert(readySR(4, 2*time.Second))
	if err := <-res; err != nil || cold != 2*time.Second {
		t.Fatalf("WaitReady = %v, %v; want 2s", cold, err)
	}
	if len(reports) != 1 || reports[0].Generation != 4 {
		t.Errorf("progress reported %+v; want only generation 4", reports)
	}
}

func TestStatusOf(t *testing.T) {
	failed := func(conds ...metav1.Condition) *v1alpha1.ScaleRequest {
		sr := readySR(2, 0)
		sr.Status.Phase = v1alpha1.PhaseFailed
		sr.Status.Conditions = conds
		return sr
	}
	cond := func(typ string, st metav1.ConditionStatus, reason string, gen int64) metav1.Condition {
		return metav1.Condition{Type: typ, Status: st, Reason: reason, ObservedGeneration: gen}
	}
	tests := []struct {
		name   string
		sr     *v1alpha1.ScaleRequest
		ready  bool
		failed bool
		reason string
	}{
		{"nil", nil, false, false, ""},
		{"ready", readySR(2, 0), true, false, v1alpha1.ReasonTargetReady},
		{"ready condition of an older generation", func() *v1alpha1.ScaleRequest {
			sr := readySR(2, 0)
			sr.Generation = 3
			return sr
		}(), false, false, ""},
		{"failed on Scaled", failed(cond("Scaled", "False", v1alpha1.ReasonForbidden, 2)), false, true, v1alpha1.ReasonForbidden},
		{"failed on Ready", failed(cond("Scaled", "True", v1alpha1.ReasonScaledFromZero, 2), cond("Ready", "False", v1alpha1.ReasonReadyTimeout, 2)),
			false, true, v1alpha1.ReasonReadyTimeout},
		{"failure reason preferred", failed(cond("Scaled", "False", v1alpha1.ReasonRescaleWindow, 2), cond("Ready", "False", v1alpha1.ReasonReadyTimeout, 2)),
			false, true, v1alpha1.ReasonReadyTimeout},
		{"failed for an older generation", func() *v1alpha1.ScaleRequest {
			sr := failed(cond("Scaled", "False", v1alpha1.ReasonTargetNotFound, 2))
			sr.Generation = 3
			return sr
		}(), false, false, ""},
		{"failed without conditions", failed(), false, true, "Failed"},
		{"pending in the rescale window", func() *v1alpha1.ScaleRequest {
			sr := readySR(2, 0)
			sr.Status.Phase = v1alpha1.PhasePending
			sr.Status.Conditions = []metav1.Condition{cond("Scaled", "False", v1alpha1.ReasonRescaleWindow, 2)}
			return sr
		}(), false, false, v1alpha1.ReasonRescaleWindow},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := StatusOf(tc.sr)
			if s.Ready != tc.ready || s.Failed != tc.failed || s.Reason != tc.reason {
				t.Errorf("StatusOf = %+v; want ready %v failed %v reason %q", s, tc.ready, tc.failed, tc.reason)
			}
		})
	}
}
