package faults

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/e2e/framework"
)

const (
	installNamespace = "zerowake-system"
	// creators bounds the parallel API calls the tests make to set up a burst.
	creators = 24
)

func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// newNamespace creates a namespace for one test. Unlike localcluster.NewNamespace it is not
// deleted when the test ends (only its ScaleRequests are): deleting a thousand Deployments and
// their pods would load the control plane under the next test, and the cluster is thrown away
// after the package. Small tests whose leftovers would keep the control plane busy use
// newTidyNamespace.
func newNamespace(t *testing.T) string {
	t.Helper()
	ctx := testContext(t, 30*time.Second)
	ns, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")) + "-"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating a namespace: %v", err)
	}
	// Requests a test leaves unfinished (a controller killed mid-burst) must not become the
	// next test's work: every test's controller serves all namespaces, as installed.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := client.ZerowakeV1alpha1().ScaleRequests(ns.Name).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
			t.Errorf("deleting the ScaleRequests in %s: %v", ns.Name, err)
		}
	})
	for {
		if _, err := kube.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			return ns.Name
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no default ServiceAccount in %s (see %s)", ns.Name, cluster.LogFile("kube-controller-manager"))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// newTidyNamespace is newNamespace, deleted when the test ends.
func newTidyNamespace(t *testing.T) string {
	ns := newNamespace(t)
	t.Cleanup(func() {
		if err := kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}); err != nil {
			t.Errorf("deleting namespace %s: %v", ns, err)
		}
	})
	return ns
}

// identity is a ServiceAccount in the install namespace with exactly the installed
// controller's rights (deploy/'s ClusterRole and leader-election Role), so that each controller
// process a test runs has a user name of its own in the audit log.
type identity struct {
	name   string
	user   string
	config *rest.Config
}

func newIdentity(t *testing.T, name string) identity {
	t.Helper()
	ctx := testContext(t, 30*time.Second)
	if _, err := kube.CoreV1().ServiceAccounts(installNamespace).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating ServiceAccount %s: %v", name, err)
	}
	subjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: installNamespace}}
	if _, err := kube.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "faults-" + name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "zerowake-controller"},
		Subjects:   subjects,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bindLeaderElection(t, name)
	config, err := cluster.ServiceAccountConfig(ctx, installNamespace, name)
	if err != nil {
		t.Fatal(err)
	}
	return identity{name: name, user: serviceAccountUser(name), config: config}
}

// bindLeaderElection binds the installed leader-election Role to the ServiceAccount name.
func bindLeaderElection(t *testing.T, name string) {
	t.Helper()
	if _, err := kube.RbacV1().RoleBindings(installNamespace).Create(testContext(t, 30*time.Second), &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "faults-" + name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "zerowake-controller-leader-election"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: installNamespace}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func serviceAccountUser(name string) string {
	return "system:serviceaccount:" + installNamespace + ":" + name
}

// controllers tracks the controller processes a test started, so failures can show their logs.
type controllers struct {
	mu    sync.Mutex
	procs []*framework.Controller
}

func (cs *controllers) add(c *framework.Controller) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.procs = append(cs.procs, c)
}

// tails returns the end of every controller's log.
func (cs *controllers) tails(n int) string {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	var b strings.Builder
	for _, c := range cs.procs {
		fmt.Fprintf(&b, "\n--- controller %s (%s), last %d lines:\n%s\n", c.Name, c.LogPath, n, c.Tail(n))
	}
	return b.String()
}

// fixture is what every fault test has: its controllers and a failure that shows their logs.
type fixture struct {
	t    *testing.T
	ctrl *controllers
}

// sub returns the fixture for a subtest of f's test.
func (f *fixture) sub(t *testing.T) *fixture { return &fixture{t: t, ctrl: f.ctrl} }

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, ctrl: &controllers{}}
	t.Cleanup(func() {
		// The logs of controllers that panicked somewhere along the way fail the test.
		f.ctrl.mu.Lock()
		procs := append([]*framework.Controller(nil), f.ctrl.procs...)
		f.ctrl.mu.Unlock()
		for _, c := range procs {
			if tail := c.Tail(100000); strings.Contains(tail, "Observed a panic") || strings.Contains(tail, "panic:") {
				t.Errorf("controller %s panicked; see %s", c.Name, c.LogPath)
			}
		}
	})
	return f
}

// fatalf fails the test with the controllers' log tails appended.
func (f *fixture) fatalf(format string, args ...any) {
	f.t.Helper()
	f.t.Fatalf(format+"\n%s", append(args, f.ctrl.tails(25))...)
}

// start runs a controller as id. Every test names its own Lease, so that a lease a killed
// controller of an earlier test left behind never delays a later one.
func (f *fixture) start(name string, id identity, lease string, args ...string) *framework.Controller {
	f.t.Helper()
	all := append([]string{
		"--leader-election-namespace=" + installNamespace,
		"--leader-election-id=" + lease,
	}, args...)
	c, err := framework.StartController(testContext(f.t, time.Minute), framework.ControllerOptions{
		Name: name, Binary: binary, Config: id.config, Dir: cluster.Dir(), Args: all, NotReadyOK: true,
	})
	if err != nil {
		f.fatalf("starting controller %s: %v", name, err)
	}
	f.ctrl.add(c)
	f.t.Cleanup(func() {
		select {
		case <-c.Done():
		default:
			c.Stop(15 * time.Second)
		}
	})
	return c
}

// metric reads a metric of c, failing the test if c does not answer.
func (f *fixture) metric(c *framework.Controller, name string, labels ...string) float64 {
	f.t.Helper()
	v, err := c.Metric(name, labels...)
	if err != nil {
		f.fatalf("reading %s from controller %s: %v", name, c.Name, err)
	}
	return v
}

// scaledFromZero is how many targets c has raised from zero.
func (f *fixture) scaledFromZero(c *framework.Controller) float64 {
	return f.metric(c, "zerowake_scale_total", "reason", v1alpha1.ReasonScaledFromZero)
}

// waitFor polls cond every interval until it holds, failing with what() after timeout.
func (f *fixture) waitFor(timeout, interval time.Duration, what func() string, cond func(ctx context.Context) bool) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for !cond(ctx) {
		select {
		case <-ctx.Done():
			f.fatalf("timed out after %s waiting for %s", timeout, what())
		case <-time.After(interval):
		}
	}
}

// waitForLeader waits until the Lease names a holder other than any of not, and returns it.
func (f *fixture) waitForLeader(lease string, timeout time.Duration, not ...string) (holder string, acquired time.Time) {
	f.t.Helper()
	var last string
	f.waitFor(timeout, 20*time.Millisecond, func() string { return fmt.Sprintf("a new holder of Lease %s (holder %q, not %q)", lease, last, not) },
		func(ctx context.Context) bool {
			l, err := kube.CoordinationV1().Leases(installNamespace).Get(ctx, lease, metav1.GetOptions{})
			if err != nil {
				return false
			}
			last = ptr.Deref(l.Spec.HolderIdentity, "")
			if last == "" {
				return false
			}
			for _, n := range not {
				if last == n {
					return false
				}
			}
			if l.Spec.AcquireTime != nil {
				acquired = l.Spec.AcquireTime.Time
			}
			return true
		})
	return last, acquired
}

// ---- bursts of targets and wakes ----

func targetName(i int) string { return fmt.Sprintf("t%04d", i) }

// burstMin is the minimum of target i: mostly 1, every tenth 3, so that "not above the
// minimum" also means something for targets with more than one replica.
func burstMin(i int) int32 {
	if i%10 == 0 {
		return 3
	}
	return 1
}

// parallel runs fn for 0..n-1 on a bounded number of goroutines, retrying transient failures
// (an apiserver that is restarting) until ctx ends. It returns the first persistent error.
func parallel(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	var next atomic.Int64
	errs := make(chan error, creators)
	var wg sync.WaitGroup
	for range creators {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				for {
					err := fn(ctx, i)
					if err == nil || apierrors.IsAlreadyExists(err) {
						break
					}
					if ctx.Err() != nil || apierrors.IsInvalid(err) || apierrors.IsForbidden(err) || apierrors.IsBadRequest(err) {
						errs <- fmt.Errorf("item %d: %w", i, err)
						return
					}
					select {
					case <-ctx.Done():
					case <-time.After(100 * time.Millisecond):
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// deployment is a workload its owner marked as wakeable.
func deployment(ns, name string, replicas int32) *appsv1.Deployment {
	return &appsv1.Deployment{
		// Marked by its owner as wakeable, up to the largest burstMin.
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{v1alpha1.LabelWake: "true"},
			Annotations: map[string]string{v1alpha1.AnnotationMaxReplicas: "3"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec: corev1.PodSpec{
					Containers:                    []corev1.Container{{Name: "app", Image: "registry.example/app:1"}},
					TerminationGracePeriodSeconds: ptr.To[int64](0),
				},
			},
		},
	}
}

// unschedulable makes d's pods wait for a node that does not exist, so it never becomes ready.
func unschedulable(d *appsv1.Deployment) *appsv1.Deployment {
	d.Spec.Template.Spec.NodeSelector = map[string]string{"zerowake.dev/no-such-node": "true"}
	return d
}

// createTargets creates n idle Deployments t0000.. in ns.
func (f *fixture) createTargets(ns string, n int) {
	f.t.Helper()
	start := time.Now()
	ctx := testContext(f.t, 3*time.Minute)
	if err := parallel(ctx, n, func(ctx context.Context, i int) error {
		_, err := kube.AppsV1().Deployments(ns).Create(ctx, deployment(ns, targetName(i), 0), metav1.CreateOptions{})
		return err
	}); err != nil {
		f.fatalf("creating %d targets: %v", n, err)
	}
	f.t.Logf("created %d idle Deployments in %s", n, time.Since(start).Round(time.Millisecond))
}

func scaleRequest(ns, name string, minReplicas int32) *v1alpha1.ScaleRequest {
	return &v1alpha1.ScaleRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.ScaleRequestSpec{
			ScaleTargetRef: v1alpha1.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: name},
			MinReplicas:    minReplicas,
			RequestedAt:    &metav1.MicroTime{Time: time.Now()},
		},
	}
}

// wakes creates a ScaleRequest for each of n targets in the background, as resolvers would on
// a burst of traffic; it retries through API outages. created counts those the API accepted.
type wakes struct {
	created atomic.Int64
	done    chan error
	cancel  context.CancelFunc
}

// halt stops creating requests and waits for the creators to return.
func (w *wakes) halt() {
	w.cancel()
	<-w.done
}

func startWakes(ctx context.Context, ns string, n int) *wakes {
	ctx, cancel := context.WithCancel(ctx)
	w := &wakes{done: make(chan error, 1), cancel: cancel}
	go func() {
		w.done <- parallel(ctx, n, func(ctx context.Context, i int) error {
			_, err := client.ZerowakeV1alpha1().ScaleRequests(ns).Create(ctx, scaleRequest(ns, targetName(i), burstMin(i)), metav1.CreateOptions{})
			if err == nil || apierrors.IsAlreadyExists(err) {
				w.created.Add(1)
			}
			return err
		})
	}()
	return w
}

func (f *fixture) waitWakesCreated(w *wakes, n int) {
	f.t.Helper()
	select {
	case err := <-w.done:
		if err != nil {
			f.fatalf("creating ScaleRequests: %v", err)
		}
	case <-time.After(3 * time.Minute):
		f.fatalf("creating %d ScaleRequests took more than 3m (%d created)", n, w.created.Load())
	}
}

// census counts a namespace's ScaleRequests by where their latest signal stands.
type census struct {
	total, ready, scaled int
	phases               map[v1alpha1.ScaleRequestPhase]int
	notReady             []*v1alpha1.ScaleRequest
}

func (c census) String() string {
	var phases []string
	for p, n := range c.phases {
		phases = append(phases, fmt.Sprintf("%s=%d", p, n))
	}
	sort.Strings(phases)
	return fmt.Sprintf("%d requests, %d scaled, %d ready for their latest signal (%s)", c.total, c.scaled, c.ready, strings.Join(phases, " "))
}

func takeCensus(ctx context.Context, ns string) (census, error) {
	list, err := client.ZerowakeV1alpha1().ScaleRequests(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return census{}, err
	}
	c := census{total: len(list.Items), phases: map[v1alpha1.ScaleRequestPhase]int{}}
	for i := range list.Items {
		sr := &list.Items[i]
		c.phases[sr.Status.Phase]++
		current := sr.Status.ObservedGeneration == sr.Generation
		if cond := meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionScaled); current && cond != nil &&
			cond.Status == metav1.ConditionTrue && cond.ObservedGeneration == sr.Generation {
			c.scaled++
		}
		if current && sr.Status.Phase == v1alpha1.PhaseReady {
			c.ready++
		} else {
			c.notReady = append(c.notReady, sr)
		}
	}
	return c, nil
}

// waitAllReady waits until n ScaleRequests in ns are Ready for their latest signal.
func (f *fixture) waitAllReady(ns string, n int, timeout time.Duration) census {
	f.t.Helper()
	var last census
	var lastErr error
	logged := time.Now()
	f.waitFor(timeout, 500*time.Millisecond, func() string {
		var b strings.Builder
		fmt.Fprintf(&b, "all %d ScaleRequests in %s to be Ready: %v (last error: %v)", n, ns, last, lastErr)
		for i, sr := range last.notReady {
			if i == 5 {
				fmt.Fprintf(&b, "\n  ... and %d more", len(last.notReady)-5)
				break
			}
			fmt.Fprintf(&b, "\n  %s: %s", sr.Name, framework.DescribeStatus(sr))
		}
		return b.String()
	}, func(ctx context.Context) bool {
		last, lastErr = takeCensus(ctx, ns)
		if time.Since(logged) >= 10*time.Second {
			f.t.Logf("progress: %v; %s", last, targetsReady(ctx, ns))
			logged = time.Now()
		}
		return lastErr == nil && last.total == n && last.ready == n
	})
	return last
}

// replicaRecorder remembers the highest spec.replicas each Deployment in a namespace ever had,
// through an informer, which survives apiserver restarts by itself.
type replicaRecorder struct {
	mu  sync.Mutex
	max map[string]int32
}

func recordReplicas(t *testing.T, ns string) *replicaRecorder {
	r := &replicaRecorder{max: map[string]int32{}}
	factory := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithNamespace(ns))
	informer := factory.Apps().V1().Deployments().Informer()
	observe := func(obj any) {
		if d, ok := obj.(*appsv1.Deployment); ok {
			r.mu.Lock()
			r.max[d.Name] = max(r.max[d.Name], ptr.Deref(d.Spec.Replicas, 1))
			r.mu.Unlock()
		}
	}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: observe, UpdateFunc: func(_, obj any) { observe(obj) },
	}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	factory.Start(stop)
	t.Cleanup(func() { close(stop); factory.Shutdown() })
	if !cache.WaitForCacheSync(testContext(t, 30*time.Second).Done(), informer.HasSynced) {
		t.Fatal("deployment informer did not sync")
	}
	return r
}

func (r *replicaRecorder) maxOf(name string) int32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.max[name]
}

// checkTargetsAtMinimum checks every target in ns has exactly its minimum, and never had more.
func (f *fixture) checkTargetsAtMinimum(ns string, n int, rec *replicaRecorder) {
	f.t.Helper()
	list, err := kube.AppsV1().Deployments(ns).List(testContext(f.t, time.Minute), metav1.ListOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	if len(list.Items) != n {
		f.t.Fatalf("%d Deployments in %s, want %d", len(list.Items), ns, n)
	}
	bad := 0
	for _, d := range list.Items {
		var i int
		if _, err := fmt.Sscanf(d.Name, "t%04d", &i); err != nil {
			f.t.Fatalf("unexpected Deployment %s", d.Name)
		}
		want := burstMin(i)
		if got, most := ptr.Deref(d.Spec.Replicas, -1), rec.maxOf(d.Name); got != want || most != want {
			if bad++; bad <= 10 {
				f.t.Errorf("Deployment %s: spec.replicas=%d, highest ever %d; want exactly its minimum %d", d.Name, got, most, want)
			}
		}
	}
	if bad > 0 {
		f.t.Fatalf("%d of %d targets not exactly at their minimum", bad, n)
	}
}

// events lists the events of one type and reason about a ScaleRequest.
func events(ctx context.Context, ns, name, eventType, reason string) ([]corev1.Event, error) {
	selector := fields.Set{"involvedObject.name": name, "involvedObject.kind": "ScaleRequest", "reason": reason, "type": eventType}.AsSelector().String()
	list, err := kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: selector})
	if err != nil {
		return nil, err
	}
	return list.Items, nil
}

// logOutcomes logs what a controller counted, and the Warning events it posted in ns, so that
// transient failures on the way to the final state are visible.
func (f *fixture) logOutcomes(c *framework.Controller, ns string) {
	f.t.Helper()
	var parts []string
	for _, r := range []string{"ok", "conflict", "gone", "error"} {
		parts = append(parts, fmt.Sprintf("%s=%.0f", r, f.metric(c, "zerowake_status_writes_total", "result", r)))
	}
	f.t.Logf("controller %s: status writes %s", c.Name, strings.Join(parts, " "))
	list, err := kube.CoreV1().Events(ns).List(testContext(f.t, time.Minute), metav1.ListOptions{FieldSelector: "type=Warning"})
	if err != nil {
		f.t.Fatal(err)
	}
	reasons := map[string]int{}
	for _, e := range list.Items {
		reasons[e.Reason] += int(max(e.Count, 1))
		if reasons[e.Reason] <= 2 {
			f.t.Logf("Warning %s %s: %s", e.Reason, e.InvolvedObject.Name, e.Message)
		}
	}
	f.t.Logf("Warning events in %s by reason: %v", ns, reasons)
}

// targetsReady says how many Deployments in ns are ready, by the Deployment controller's own
// count: the control plane's side of the progress, to tell apart from the controller's.
func targetsReady(ctx context.Context, ns string) string {
	list, err := kube.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	ready := 0
	for _, d := range list.Items {
		if r := ptr.Deref(d.Spec.Replicas, 1); r > 0 && d.Status.ObservedGeneration == d.Generation && d.Status.ReadyReplicas >= r {
			ready++
		}
	}
	return fmt.Sprintf("%d of %d Deployments ready", ready, len(list.Items))
}
