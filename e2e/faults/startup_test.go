package faults

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/e2e/framework"
)

// TestTargetsGoneWhileNoControllerRan: Ready requests whose targets are deleted, or unmarked by
// their owner, while no controller runs send no event the next controller could hear. It finds
// them at start-up all the same (once its inventory has listed the kind): the deleted target's
// request is Failed with TargetNotFound, the unmarked one's with NotOptedIn, and a request
// whose target is still there stays Ready.
func TestTargetsGoneWhileNoControllerRan(t *testing.T) {
	f := newFixture(t)
	ns := newNamespace(t)
	id := newIdentity(t, "startup")
	const lease = "faults-startup"
	args := []string{"--rescale-duration=2s", "--ready-timeout=1m"}
	ctx := testContext(t, 3*time.Minute)
	names := []string{"deleted", "unmarked", "kept"}
	for _, name := range names {
		if _, err := kube.AppsV1().Deployments(ns).Create(ctx, deployment(ns, name, 0), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		f.createRequest(ns, scaleRequest(ns, name, 1))
	}

	first := f.start("startup-1", id, lease, args...)
	for _, name := range names {
		f.waitForPhase(ns, name, v1alpha1.PhaseReady, time.Minute)
	}
	if !first.Stop(15 * time.Second) {
		f.fatalf("the first controller did not stop on SIGTERM")
	}

	// While no controller runs.
	if err := kube.AppsV1().Deployments(ns).Delete(ctx, "deleted", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.AppsV1().Deployments(ns).Patch(ctx, "unmarked", types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"`+v1alpha1.LabelWake+`":null}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}

	f.start("startup-2", id, lease, args...)
	for name, reason := range map[string]string{"deleted": v1alpha1.ReasonTargetNotFound, "unmarked": v1alpha1.ReasonNotOptedIn} {
		sr := f.waitForPhase(ns, name, v1alpha1.PhaseFailed, time.Minute)
		if c := meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionScaled); c == nil || c.Reason != reason || c.ObservedGeneration != sr.Generation {
			f.fatalf("%s: want Scaled=False %s for the current signal; status: %s", name, reason, framework.DescribeStatus(sr))
		}
	}
	sr, err := client.ZerowakeV1alpha1().ScaleRequests(ns).Get(ctx, "kept", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sr.Status.Phase != v1alpha1.PhaseReady {
		f.fatalf("a request whose target is still there reads %s after the restart", sr.Status.Phase)
	}
}
