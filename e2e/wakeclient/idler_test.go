package wakeclient

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/zerowake/zerowake/hack/localcluster"
	"github.com/zerowake/zerowake/wake"
)

// TestWakeRightAfterAnOutsideIdler: ten Ready targets are set to zero by an outside idler (a
// PATCH of spec.replicas), and a resolver calls Wake and then WaitReady at once, while the
// earlier signal is still inside the window and its cache has not seen the scale-down yet. The
// first answers come from that stale cache; the client must still get every target back up
// (it re-signals when the Idle arrives), with no further call from the resolver.
func TestWakeRightAfterAnOutsideIdler(t *testing.T) {
	ns := localcluster.NewNamespace(t, cluster)
	const n = 10
	client, err := wake.NewForConfig(cluster.RESTConfig(), wake.Options{Namespace: ns, Window: rescaleDuration})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer client.Stop()

	targets := make([]wake.Target, n)
	for i := range targets {
		targets[i] = wake.Deployment(ns, fmt.Sprintf("web-%d", i))
		createIdleDeployment(t, ns, targets[i].Name)
	}
	for _, target := range targets {
		if _, err := client.Wake(ctx, target); err != nil {
			t.Fatal(err)
		}
	}
	for _, target := range targets {
		if _, err := client.WaitReady(ctx, target); err != nil {
			t.Fatalf("first wake of %s: %v", target, err)
		}
	}

	// The idler and, at d = 0, the resolver.
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		answers = map[string]int{}
	)
	for _, target := range targets {
		wg.Go(func() {
			patch := []byte(`{"spec":{"replicas":0}}`)
			if _, err := kube.AppsV1().Deployments(ns).Patch(ctx, target.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
				t.Errorf("idler: %v", err)
				return
			}
			action, err := client.Wake(ctx, target)
			if err != nil {
				t.Errorf("Wake %s: %v", target, err)
				return
			}
			waitCtx, cancel := context.WithTimeout(ctx, rescaleDuration+30*time.Second)
			defer cancel()
			_, err = client.WaitReady(waitCtx, target)
			mu.Lock()
			answers[action.String()+fmt.Sprintf("/ready=%v", err == nil)]++
			mu.Unlock()
		})
	}
	wg.Wait()
	t.Logf("answers at d=0: %v", answers)

	// Every target is back up. The controller scales a target at most once per rescale window,
	// so the re-signal may be deferred to the end of the window of the first wake; the bound is
	// that window plus the time kwok pods take to be ready, with a margin.
	deadline := time.Now().Add(rescaleDuration + 30*time.Second)
	for _, target := range targets {
		for {
			d, err := kube.AppsV1().Deployments(ns).Get(ctx, target.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if *d.Spec.Replicas >= 1 && d.Status.ReadyReplicas >= 1 {
				break
			}
			if time.Now().After(deadline) {
				sr := client.Status(target)
				t.Fatalf("%s still at %d replicas (%d ready) a rescale window and 30s after the idler; request %+v",
					target, *d.Spec.Replicas, d.Status.ReadyReplicas, sr)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}
