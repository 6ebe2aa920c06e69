package wakeclient

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/hack/localcluster"
	"github.com/zerowake/zerowake/wake"
)

// writeCounter counts the requests that are not reads, as a resolver's API server sees them.
type writeCounter struct {
	next   http.RoundTripper
	writes atomic.Int64
}

func (w *writeCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	switch req.Method {
	case http.MethodGet, http.MethodHead:
	default:
		w.writes.Add(1)
	}
	return w.next.RoundTrip(req)
}

func createIdleDeployment(t *testing.T, ns, name string) {
	t.Helper()
	d := &appsv1.Deployment{
		// The owner opts in and allows a wake up to 3 replicas (without the cap annotation a
		// wake may ask for 1 only).
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{v1alpha1.LabelWake: "true"},
			Annotations: map[string]string{v1alpha1.AnnotationMaxReplicas: "3"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](0),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
			},
		},
	}
	if _, err := kube.AppsV1().Deployments(ns).Create(context.Background(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// controllerWrites returns the controller's scale and status writes so far.
func controllerWrites(t *testing.T) (scale, status float64) {
	t.Helper()
	scale, err := controller.Metric("zerowake_api_requests_total", "verb", "PATCH", "resource", "deployments/scale")
	if err != nil {
		t.Fatal(err)
	}
	status, err = controller.Metric("zerowake_api_requests_total", "verb", "PUT", "resource", "scalerequests/status")
	if err != nil {
		t.Fatal(err)
	}
	return scale, status
}

// TestHerd: 10,000 Wake calls from 100 goroutines for one idle target cost at most one
// ScaleRequest write, exactly one scale write, and every waiter sees it Ready.
func TestHerd(t *testing.T) {
	ns := localcluster.NewNamespace(t, cluster)
	createIdleDeployment(t, ns, "web")
	scaleBefore, statusBefore := controllerWrites(t)

	config := cluster.RESTConfig()
	counter := &writeCounter{}
	config.Wrap(func(rt http.RoundTripper) http.RoundTripper { counter.next = rt; return counter })
	client, err := wake.NewForConfig(config, wake.Options{Namespace: ns, Window: rescaleDuration})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer client.Stop()

	const goroutines, callsEach = 100, 100
	target := wake.Deployment(ns, "web")
	var (
		wg        sync.WaitGroup
		wrote     atomic.Int64
		failures  atomic.Int64
		ready     atomic.Int64
		coldStart atomic.Int64
	)
	start := make(chan struct{})
	for range goroutines {
		wg.Go(func() {
			<-start
			for range callsEach {
				action, err := client.Wake(ctx, target)
				if err != nil {
					failures.Add(1)
					t.Errorf("Wake: %v", err)
					return
				}
				if action.Wrote() {
					wrote.Add(1)
				}
			}
			d, err := client.WaitReady(ctx, target)
			if err != nil {
				t.Errorf("WaitReady: %v", err)
				return
			}
			ready.Add(1)
			coldStart.Store(int64(d))
		})
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	if n := counter.writes.Load(); n > 1 {
		t.Errorf("the wake client made %d API writes for %d calls, want at most 1", n, goroutines*callsEach)
	}
	if n := wrote.Load(); n < 1 {
		t.Errorf("no call reports the write that signalled demand")
	}
	if n := ready.Load(); n != goroutines {
		t.Errorf("%d of %d waiters saw Ready", n, goroutines)
	}
	d, err := kube.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil || *d.Spec.Replicas != 1 || d.Status.ReadyReplicas < 1 {
		t.Fatalf("target not ready at 1 replica: %v %+v", err, d)
	}
	scaleAfter, statusAfter := controllerWrites(t)
	if got := scaleAfter - scaleBefore; got != 1 {
		t.Errorf("controller made %v scale writes, want exactly 1", got)
	}
	// Scaling, then Ready: a write per step, none for the herd itself.
	if got := statusAfter - statusBefore; got > 3 {
		t.Errorf("controller made %v status writes, want at most 3", got)
	}
	t.Logf("%d calls: %d client writes, %v scale writes, %v status writes, cold start %s",
		goroutines*callsEach, counter.writes.Load(), scaleAfter-scaleBefore, statusAfter-statusBefore, time.Duration(coldStart.Load()))
}
