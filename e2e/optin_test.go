package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/generated/clientset/versioned"
)

// impersonating returns clients acting as user (and groups), as a resolver's or a person's
// credentials would.
func impersonating(t *testing.T, user string, groups ...string) (kubernetes.Interface, versioned.Interface) {
	t.Helper()
	cfg := cluster.RESTConfig()
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: append([]string{"system:authenticated"}, groups...)}
	k, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	z, err := versioned.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return k, z
}

func bindClusterRole(t *testing.T, ns, clusterRole string, subject rbacv1.Subject) {
	t.Helper()
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: clusterRole + "-" + strings.ToLower(subject.Name), Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
		Subjects:   []rbacv1.Subject{subject},
	}
	if _, err := kube.RbacV1().RoleBindings(ns).Create(testContext(t), rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestResolverRoleAndOwnerOptIn: a resolver bound to the shipped zerowake-resolver role can ask
// but not act: it creates ScaleRequests, cannot read or scale Deployments itself; its request
// for a marked target is served, for an unmarked one or above the owner's cap it is refused with
// the reason and a Warning event and nothing is scaled; and marking the target afterwards serves
// the waiting request without a new signal.
func TestResolverRoleAndOwnerOptIn(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	if _, err := kube.CoreV1().ServiceAccounts(ns).Create(testContext(t), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "resolver"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bindClusterRole(t, ns, "zerowake-resolver", rbacv1.Subject{Kind: "ServiceAccount", Name: "resolver", Namespace: ns})
	asKube, asZW := impersonating(t, "system:serviceaccount:"+ns+":resolver", "system:serviceaccounts", "system:serviceaccounts:"+ns)
	ctx := testContext(t)

	createDeployment(t, ns, "marked", 0)
	unmarked := createDeployment(t, ns, "unmarked", 0)
	if _, err := kube.AppsV1().Deployments(ns).Patch(ctx, unmarked.Name, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"`+v1alpha1.LabelWake+`":null}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	capped := createDeployment(t, ns, "capped", 0)
	if _, err := kube.AppsV1().Deployments(ns).Patch(ctx, capped.Name, types.MergePatchType,
		[]byte(`{"metadata":{"annotations":{"`+v1alpha1.AnnotationMaxReplicas+`":"2"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}

	// The resolver's own rights: no reading or scaling of workloads.
	if _, err := asKube.AppsV1().Deployments(ns).Get(ctx, "marked", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("the resolver read a Deployment: %v", err)
	}
	if _, err := asKube.AppsV1().Deployments(ns).Patch(ctx, "marked", types.MergePatchType, []byte(`{"spec":{"replicas":1}}`), metav1.PatchOptions{}, "scale"); !apierrors.IsForbidden(err) {
		t.Fatalf("the resolver scaled a Deployment itself: %v", err)
	}

	for _, sr := range []*v1alpha1.ScaleRequest{
		newScaleRequest(ns, "marked", "apps/v1", "Deployment", 1),
		newScaleRequest(ns, "unmarked", "apps/v1", "Deployment", 1),
		newScaleRequest(ns, "capped", "apps/v1", "Deployment", 5),
	} {
		if _, err := asZW.ZerowakeV1alpha1().ScaleRequests(ns).Create(ctx, sr, metav1.CreateOptions{}); err != nil {
			t.Fatalf("the resolver could not create ScaleRequest %s: %v", sr.Name, err)
		}
	}

	waitForScaleRequest(t, ns, "marked", "Ready", inPhase(v1alpha1.PhaseReady))

	sr := waitForScaleRequest(t, ns, "unmarked", "Failed", inPhase(v1alpha1.PhaseFailed))
	cond := expectCondition(t, sr, v1alpha1.ConditionScaled, metav1.ConditionFalse, v1alpha1.ReasonNotOptedIn)
	if !strings.Contains(cond.Message, "kubectl label deployments.apps unmarked -n "+ns+" "+v1alpha1.LabelWake+"=true") {
		t.Fatalf("the refusal does not say how to opt in: %s", cond.Message)
	}
	if msg := waitForEvent(t, ns, "unmarked", corev1.EventTypeWarning, v1alpha1.ReasonNotOptedIn); !strings.Contains(msg, v1alpha1.LabelWake) {
		t.Fatalf("event: %s", msg)
	}

	sr = waitForScaleRequest(t, ns, "capped", "Failed", inPhase(v1alpha1.PhaseFailed))
	expectCondition(t, sr, v1alpha1.ConditionScaled, metav1.ConditionFalse, v1alpha1.ReasonAboveOwnerCap)
	waitForEvent(t, ns, "capped", corev1.EventTypeWarning, v1alpha1.ReasonAboveOwnerCap)

	for _, name := range []string{"unmarked", "capped"} {
		if d, err := kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{}); err != nil || ptr.Deref(d.Spec.Replicas, -1) != 0 {
			t.Fatalf("Deployment %s was scaled without its owner's consent: %v %v", name, ptr.Deref(d.Spec.Replicas, -1), err)
		}
	}

	// The owner marks the workload: the waiting request is served without a new signal.
	generation := sr.Generation
	marked := time.Now()
	if _, err := kube.AppsV1().Deployments(ns).Patch(ctx, "unmarked", types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"`+v1alpha1.LabelWake+`":"true"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	sr = waitForScaleRequest(t, ns, "unmarked", "Scaled", func(sr *v1alpha1.ScaleRequest) bool {
		c := expectConditionIfAny(sr, v1alpha1.ConditionScaled)
		return c != nil && c.Status == metav1.ConditionTrue
	})
	served := time.Since(marked)
	t.Logf("served %s after the owner's mark", served)
	if sr.Generation != generation {
		t.Fatalf("served only after a new signal (generation %d -> %d)", generation, sr.Generation)
	}
	// The mark reaches the controller as a watch event of its inventory, which queues the
	// request at once; without it, the request would wait for its failure re-check.
	if served > time.Second {
		t.Fatalf("the marked target was served %s after the mark; the inventory's watch event should queue it at once", served)
	}
}

func expectConditionIfAny(sr *v1alpha1.ScaleRequest, condType string) *metav1.Condition {
	for i := range sr.Status.Conditions {
		if sr.Status.Conditions[i].Type == condType && sr.Status.Conditions[i].ObservedGeneration == sr.Generation {
			return &sr.Status.Conditions[i]
		}
	}
	return nil
}

// TestNamespaceUsersSeeScaleRequests: the shipped roles aggregate into the built-in view and
// edit roles; neither role gains /scale through them.
func TestNamespaceUsersSeeScaleRequests(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	bindClusterRole(t, ns, "view", rbacv1.Subject{Kind: "User", APIGroup: rbacv1.GroupName, Name: "viewer"})
	bindClusterRole(t, ns, "edit", rbacv1.Subject{Kind: "User", APIGroup: rbacv1.GroupName, Name: "editor"})
	createDeployment(t, ns, "web", 0)
	ctx := testContext(t)

	viewerKube, viewer := impersonating(t, "viewer")
	editorKube, editor := impersonating(t, "editor")
	// Aggregation is the API server's own controller: give it until the rules show.
	waitFor(t, "the view role to include ScaleRequests", func(ctx context.Context) bool {
		_, err := viewer.ZerowakeV1alpha1().ScaleRequests(ns).List(ctx, metav1.ListOptions{})
		return err == nil
	})
	if _, err := editor.ZerowakeV1alpha1().ScaleRequests(ns).Create(ctx, newScaleRequest(ns, "web", "apps/v1", "Deployment", 1), metav1.CreateOptions{}); err != nil {
		t.Fatalf("an edit user could not create a ScaleRequest: %v", err)
	}
	if _, err := viewer.ZerowakeV1alpha1().ScaleRequests(ns).Create(ctx, newScaleRequest(ns, "other", "apps/v1", "Deployment", 1), metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("a view user created a ScaleRequest: %v", err)
	}
	list, err := viewer.ZerowakeV1alpha1().ScaleRequests(ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("a view user lists %v ScaleRequests: %v", len(list.Items), err)
	}
	// /scale stays what the built-in roles give: none for view, as before for edit.
	for _, c := range []struct {
		who     string
		client  kubernetes.Interface
		allowed bool
	}{{"viewer", viewerKube, false}, {"editor", editorKube, true}} {
		review, err := c.client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: ns, Verb: "patch", Group: "apps", Resource: "deployments", Subresource: "scale"}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if review.Status.Allowed != c.allowed {
			t.Fatalf("%s may patch deployments/scale: %v, want %v (the built-in role's own right)", c.who, review.Status.Allowed, c.allowed)
		}
		for _, verb := range []string{"update", "patch"} {
			review, err := c.client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
				Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: ns, Verb: verb, Group: v1alpha1.GroupName, Resource: "scalerequests", Subresource: "status"}},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if review.Status.Allowed {
				t.Fatalf("%s may %s scalerequests/status, which only the controller writes", c.who, verb)
			}
		}
	}
}

// waitFor waits until cond holds, within the package's wait timeout.
func waitFor(t *testing.T, what string, cond func(context.Context) bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(testContext(t), 50*time.Millisecond, waitTimeout, true, func(ctx context.Context) (bool, error) {
		return cond(ctx), nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}
