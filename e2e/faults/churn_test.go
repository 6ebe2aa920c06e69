package faults

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/e2e/framework"
)

// widgetCRD is a kind with /scale and no controller of its own: the test plays its controller.
// It is served at one version, VERSION.
const widgetCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {kind: Widget, listKind: WidgetList, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: VERSION
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
`

// footprint is what a controller holds while idle: it must come back to it after churn.
type footprint struct {
	goroutines, active float64
	// watches are the apiserver's open watches of single Deployments and Widgets: the
	// controller's target watches (nothing else in this test watches them).
	watches int
}

func (fp footprint) String() string {
	return fmt.Sprintf("goroutines=%.0f active_requests=%.0f target_watches=%d", fp.goroutines, fp.active, fp.watches)
}

func (f *fixture) footprint(c *framework.Controller) footprint {
	f.t.Helper()
	return footprint{
		goroutines: f.metric(c, "go_goroutines"),
		active:     f.metric(c, "zerowake_active_requests"),
		watches:    f.targetWatches(),
	}
}

// targetWatches counts the apiserver's open watches of one named Deployment or Widget.
func (f *fixture) targetWatches() int {
	f.t.Helper()
	raw, err := kube.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(testContext(f.t, 30*time.Second))
	if err != nil {
		f.t.Fatalf("apiserver metrics: %v", err)
	}
	n := 0
	scanner := bufio.NewScanner(strings.NewReader(string(raw)))
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	for scanner.Scan() {
		line := scanner.Text()
		if !strings.HasPrefix(line, "apiserver_longrunning_requests{") || !strings.Contains(line, `verb="WATCH"`) ||
			strings.Contains(line, `scope="cluster"`) ||
			!(strings.Contains(line, `resource="deployments"`) || strings.Contains(line, `resource="widgets"`)) {
			continue
		}
		fields := strings.Fields(line)
		v, _ := strconv.ParseFloat(fields[len(fields)-1], 64)
		n += int(v)
	}
	return n
}

// TestChurn pulls things out from under the controller while it works: a target deleted while
// it is being scaled, requests deleted in flight, and the target kind's CRD removed and
// installed again. Each ends in a clear status or a clean end of the work; the controller does
// not crash, finds the kind again, and afterwards holds no more goroutines, requests or watches
// than before.
func TestChurn(t *testing.T) {
	f := newFixture(t)
	ns := newTidyNamespace(t)
	id := newIdentity(t, "churn")
	grantWidgets(t, id.name)
	installWidgets(t, "v1")
	dyn, err := dynamic.NewForConfig(cluster.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	c := f.start("churn", id, "faults-churn", "--rescale-duration=2s", "--ready-timeout=5m",
		"--allowed-kinds=Deployment.apps,StatefulSet.apps,Widget.example.com")
	ctx := testContext(t, 5*time.Minute)

	// Warm up (clients, discovery, connections), then take the idle footprint.
	if _, err := kube.AppsV1().Deployments(ns).Create(ctx, deployment(ns, "warm", 0), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.createRequest(ns, scaleRequest(ns, "warm", 1))
	f.waitForPhase(ns, "warm", v1alpha1.PhaseReady, 30*time.Second)
	var before footprint
	f.waitFor(30*time.Second, 100*time.Millisecond, func() string { return "the controller to be idle: " + before.String() },
		func(context.Context) bool { before = f.footprint(c); return before.active == 0 && before.watches == 0 })
	t.Logf("idle before churn: %v", before)

	t.Run("TargetDeletedWhileScaling", func(t *testing.T) {
		f := f.sub(t)
		if _, err := kube.AppsV1().Deployments(ns).Create(ctx, unschedulable(deployment(ns, "doomed", 0)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		f.createRequest(ns, scaleRequest(ns, "doomed", 1))
		f.waitForPhase(ns, "doomed", v1alpha1.PhaseScaling, 30*time.Second)
		if err := kube.AppsV1().Deployments(ns).Delete(ctx, "doomed", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		sr := f.waitForPhase(ns, "doomed", v1alpha1.PhaseFailed, 30*time.Second)
		scaled := meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionScaled)
		if scaled == nil || scaled.Status != metav1.ConditionFalse || scaled.Reason != v1alpha1.ReasonTargetNotFound ||
			meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionReady) != nil {
			f.fatalf("status of a request whose target was deleted: %s", framework.DescribeStatus(sr))
		}
		t.Logf("status: %s", framework.DescribeStatus(sr))
	})

	t.Run("RequestDeletedInFlight", func(t *testing.T) {
		f := f.sub(t)
		const waiting, racing = 50, 100
		// Requests waiting for targets that cannot become ready, deleted while they wait...
		if err := parallel(ctx, waiting, func(ctx context.Context, i int) error {
			_, err := kube.AppsV1().Deployments(ns).Create(ctx, unschedulable(deployment(ns, fmt.Sprintf("wait-%d", i), 0)), metav1.CreateOptions{})
			if err == nil {
				_, err = client.ZerowakeV1alpha1().ScaleRequests(ns).Create(ctx, scaleRequest(ns, fmt.Sprintf("wait-%d", i), 1), metav1.CreateOptions{})
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		f.waitFor(time.Minute, 100*time.Millisecond, func() string { return fmt.Sprintf("%d active requests", waiting) },
			func(context.Context) bool { return f.metric(c, "zerowake_active_requests") == waiting })
		t.Logf("%d requests waiting: %v", waiting, f.footprint(c))
		// ...and requests deleted as soon as they are created, wherever the controller is with them.
		if err := parallel(ctx, waiting+racing, func(ctx context.Context, i int) error {
			if i < waiting {
				return client.ZerowakeV1alpha1().ScaleRequests(ns).Delete(ctx, fmt.Sprintf("wait-%d", i), metav1.DeleteOptions{})
			}
			name := fmt.Sprintf("race-%d", i)
			if _, err := kube.AppsV1().Deployments(ns).Create(ctx, deployment(ns, name, 0), metav1.CreateOptions{}); err != nil {
				return err
			}
			if _, err := client.ZerowakeV1alpha1().ScaleRequests(ns).Create(ctx, scaleRequest(ns, name, 1), metav1.CreateOptions{}); err != nil {
				return err
			}
			return client.ZerowakeV1alpha1().ScaleRequests(ns).Delete(ctx, name, metav1.DeleteOptions{})
		}); err != nil {
			t.Fatal(err)
		}
		f.waitFor(time.Minute, 100*time.Millisecond, func() string { return "the deleted requests to be let go: " + f.footprint(c).String() },
			func(context.Context) bool { fp := f.footprint(c); return fp.active == 0 && fp.watches == 0 })
	})

	t.Run("KindRemoved", func(t *testing.T) {
		f := f.sub(t)
		version := "v1"
		w := func() dynamic.ResourceInterface {
			return dyn.Resource(schema.GroupVersionResource{Group: "example.com", Version: version, Resource: "widgets"}).Namespace(ns)
		}
		createWidget := func(name string) {
			t.Helper()
			obj := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "example.com/" + version, "kind": "Widget",
				"metadata": map[string]any{"name": name, "labels": map[string]any{v1alpha1.LabelWake: "true"}},
				"spec":     map[string]any{"replicas": int64(0)},
			}}
			if _, err := w().Create(ctx, obj, metav1.CreateOptions{}); err != nil {
				t.Fatalf("creating widget %s: %v", name, err)
			}
		}
		// The test is the widgets' controller: a scaled widget becomes ready when it says so.
		markReady := func(name string) {
			t.Helper()
			patch := []byte(`{"status":{"replicas":1,"readyReplicas":1}}`)
			if _, err := w().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
				t.Fatalf("widget %s status: %v", name, err)
			}
		}
		widgetRequest := func(name string) *v1alpha1.ScaleRequest {
			sr := scaleRequest(ns, name, 1)
			sr.Spec.ScaleTargetRef.APIVersion, sr.Spec.ScaleTargetRef.Kind = "example.com/v1", "Widget"
			return sr
		}

		createWidget("gadget")
		f.createRequest(ns, widgetRequest("gadget"))
		f.waitForPhase(ns, "gadget", v1alpha1.PhaseScaling, 30*time.Second)
		markReady("gadget")
		f.waitForPhase(ns, "gadget", v1alpha1.PhaseReady, 30*time.Second)

		createWidget("pending")
		f.createRequest(ns, widgetRequest("pending"))
		f.waitForPhase(ns, "pending", v1alpha1.PhaseScaling, 30*time.Second)

		// The kind goes away while "pending" waits for its widget.
		if _, err := cluster.Kubectl(ctx, "delete", "crd", "widgets.example.com", "--wait=true", "--timeout=60s"); err != nil {
			t.Fatal(err)
		}
		sr := f.waitForPhase(ns, "pending", v1alpha1.PhaseFailed, 30*time.Second)
		t.Logf("waiting request after its kind was removed: %s", framework.DescribeStatus(sr))
		if meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionReady) != nil {
			f.fatalf("Ready condition kept for a target that is gone: %s", framework.DescribeStatus(sr))
		}

		// A new signal for a kind that is no longer served. Right after the CRD is deleted the
		// apiserver may still answer for the kind ("widget not found"); once it no longer
		// does, the controller must say the kind is unknown, and forget how it resolved it.
		f.bump(ns, "gadget")
		sr = f.waitForPhase(ns, "gadget", v1alpha1.PhaseFailed, 30*time.Second)
		t.Logf("new signal after the kind was removed: %s", framework.DescribeStatus(sr))
		sr = f.waitForScaled(ns, "gadget", metav1.ConditionFalse, v1alpha1.ReasonKindUnknown, 30*time.Second)
		t.Logf("then: %s", framework.DescribeStatus(sr))

		// The kind comes back, at another version: the controller's RESTMapper finds its new
		// mapping on the re-check (requests name a group and kind; the version is resolved).
		version = "v2"
		installWidgets(t, version)
		back := time.Now()
		createWidget("gadget")
		f.waitForPhase(ns, "gadget", v1alpha1.PhaseScaling, time.Minute)
		t.Logf("the kind, back at %s, was scaled %s after it came back", version, time.Since(back).Round(time.Millisecond))
		markReady("gadget")
		f.waitForPhase(ns, "gadget", v1alpha1.PhaseReady, 30*time.Second)
		if err := client.ZerowakeV1alpha1().ScaleRequests(ns).Delete(ctx, "pending", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	})

	// Back to idle: no request held, no target watch open, goroutines back near where they were.
	// The inventory of marked workloads keeps one informer per resource in use for the life of
	// the process (about 7 goroutines each); the churn brought two (widgets at v1 and at v2).
	// That is per kind, not per request: 50 leaked target watches would be hundreds.
	const slack = 10 + 2*8
	var after footprint
	f.waitFor(time.Minute, 200*time.Millisecond, func() string {
		return fmt.Sprintf("the controller to return to its idle footprint %v (+%d goroutines); now %v", before, slack, after)
	}, func(context.Context) bool {
		after = f.footprint(c)
		return after.active == 0 && after.watches == 0 && after.goroutines <= before.goroutines+slack
	})
	t.Logf("idle after churn: %v (before: %v)", after, before)
	select {
	case <-c.Done():
		f.fatalf("the controller exited")
	default:
	}
}

func (f *fixture) createRequest(ns string, sr *v1alpha1.ScaleRequest) {
	f.t.Helper()
	if _, err := client.ZerowakeV1alpha1().ScaleRequests(ns).Create(testContext(f.t, 30*time.Second), sr, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// bump signals demand again by moving spec.requestedAt.
func (f *fixture) bump(ns, name string) {
	f.t.Helper()
	patch := `{"spec":{"requestedAt":"` + time.Now().UTC().Format(metav1.RFC3339Micro) + `"}}`
	if _, err := client.ZerowakeV1alpha1().ScaleRequests(ns).Patch(testContext(f.t, 30*time.Second), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// installWidgets installs the Widget CRD, served at version, and waits until it is served.
func installWidgets(t *testing.T, version string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "widgets.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(widgetCRD, "VERSION", version)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t, time.Minute)
	if _, err := cluster.Kubectl(ctx, "apply", "-f", path); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Kubectl(ctx, "wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=60s"); err != nil {
		t.Fatal(err)
	}
}

// grantWidgets gives the ServiceAccount name what the controller needs for Widgets, as
// deploy/clusterrole.yaml says to do for another kind.
func grantWidgets(t *testing.T, name string) {
	t.Helper()
	ctx := testContext(t, 30*time.Second)
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "faults-widgets"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"example.com"}, Resources: []string{"widgets/scale"}, Verbs: []string{"get", "patch"}},
			{APIGroups: []string{"example.com"}, Resources: []string{"widgets"}, Verbs: []string{"list", "watch"}},
		},
	}
	if _, err := kube.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "faults-widgets-" + name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: installNamespace}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
