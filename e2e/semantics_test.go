package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/e2e/framework"
	"github.com/zerowake/zerowake/wake"
)

// TestOldSignalIsServed: a signal whose requestedAt is far older than --ready-timeout (a fixed
// value, a resolver clock behind the controller's) is served, not failed at once: the ready
// deadline runs from the controller's own observation.
func TestOldSignalIsServed(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	// One target at zero (scaled now), one already up (nothing written, so no lastScaleTime to
	// count from): neither may time out before its watch has even listed it.
	createDeployment(t, ns, "idle", 0)
	createDeployment(t, ns, "up", 1)
	waitForDeployment(t, ns, "up", "ready", func(d *appsv1.Deployment) bool { return d.Status.ReadyReplicas == 1 })
	for _, name := range []string{"idle", "up"} {
		sr := newScaleRequest(ns, name, "apps/v1", "Deployment", 1)
		sr.Spec.RequestedAt = &metav1.MicroTime{Time: time.Now().Add(-time.Hour)}
		createScaleRequest(t, sr)
	}
	for _, name := range []string{"idle", "up"} {
		got := waitForScaleRequest(t, ns, name, "Ready or Failed", func(sr *v1alpha1.ScaleRequest) bool {
			return inPhase(v1alpha1.PhaseReady)(sr) || inPhase(v1alpha1.PhaseFailed)(sr)
		})
		if got.Status.Phase != v1alpha1.PhaseReady {
			t.Fatalf("%s: a signal an hour old (ready timeout 15s) was not served: %s", name, framework.DescribeStatus(got))
		}
	}
}

// TestReadyFollowsTheTargetBackToZero: a Ready request whose target an idler sets back to zero
// becomes Idle; the wake client then re-signals instead of answering from the stale Ready, and
// WaitReady returns only once the target really has its minimum ready again.
func TestReadyFollowsTheTargetBackToZero(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	createDeployment(t, ns, "web", 0)
	resolver := wake.New(client, wake.Options{Namespace: ns, Window: 2 * time.Second})
	ctx := testContext(t)
	if err := resolver.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer resolver.Stop()
	target := wake.Deployment(ns, "web")
	if _, err := resolver.Wake(ctx, target); err != nil {
		t.Fatal(err)
	}
	if _, err := resolver.WaitReady(ctx, target); err != nil {
		t.Fatal(err)
	}

	// An idler scales the target back to zero, well within the client's window.
	if _, err := kube.AppsV1().Deployments(ns).Patch(ctx, "web", types.MergePatchType, []byte(`{"spec":{"replicas":0}}`), metav1.PatchOptions{}, "scale"); err != nil {
		t.Fatal(err)
	}
	sr := waitForScaleRequest(t, ns, "web", "Idle", inPhase(v1alpha1.PhaseIdle))
	expectCondition(t, sr, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonTargetScaledDown)
	waitForEvent(t, ns, "web", corev1.EventTypeNormal, v1alpha1.ReasonTargetScaledDown)

	action, err := resolver.Wake(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	if action == wake.ActionAlreadyReady || action == wake.ActionRecentlySignalled {
		t.Fatalf("Wake answered %s for a target at zero", action)
	}
	if _, err := resolver.WaitReady(ctx, target); err != nil {
		t.Fatal(err)
	}
	d, err := kube.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Status.ReadyReplicas < 1 {
		t.Fatalf("WaitReady returned while the target has %d ready replicas", d.Status.ReadyReplicas)
	}
}

// TestAdmissionPolicyDenialFails: a scale that an admission policy refuses ends Failed with
// reason Rejected, the policy's own message and a Warning event, instead of Pending forever.
func TestAdmissionPolicyDenialFails(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	ctx := testContext(t)
	if _, err := kube.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, []byte(`{"metadata":{"labels":{"scale-frozen":"true"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "freeze-" + ns},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update},
					Rule: admissionregistrationv1.Rule{APIGroups: []string{"apps"}, APIVersions: []string{"v1"},
						Resources: []string{"deployments/scale"}},
				},
			}}},
			Validations: []admissionregistrationv1.Validation{{Expression: "false", Message: "replicas are frozen in this namespace"}},
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "freeze-" + ns},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        policy.Name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
			MatchResources: &admissionregistrationv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"scale-frozen": "true"}}},
		},
	}
	if _, err := kube.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, policy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Delete(context.Background(), binding.Name, metav1.DeleteOptions{})
		_ = kube.AdmissionregistrationV1().ValidatingAdmissionPolicies().Delete(context.Background(), policy.Name, metav1.DeleteOptions{})
	})
	if _, err := kube.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createDeployment(t, ns, "web", 0)
	// The policy takes effect once the API server has loaded it: wait until it refuses a scale.
	waitFor(t, "the policy to refuse scales", func(ctx context.Context) bool {
		_, err := kube.AppsV1().Deployments(ns).Patch(ctx, "web", types.MergePatchType, []byte(`{"spec":{"replicas":0}}`), metav1.PatchOptions{}, "scale")
		return err != nil && strings.Contains(err.Error(), "frozen")
	})

	createScaleRequest(t, newScaleRequest(ns, "web", "apps/v1", "Deployment", 1))
	sr := waitForScaleRequest(t, ns, "web", "Failed", inPhase(v1alpha1.PhaseFailed))
	cond := expectCondition(t, sr, v1alpha1.ConditionScaled, metav1.ConditionFalse, v1alpha1.ReasonRejected)
	if !strings.Contains(cond.Message, "replicas are frozen in this namespace") {
		t.Fatalf("the refusal does not carry the policy's message: %s", cond.Message)
	}
	waitForEvent(t, ns, "web", corev1.EventTypeWarning, v1alpha1.ReasonRejected)

	// The policy goes away: the request is re-checked and served without a new signal.
	if err := kube.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Delete(ctx, binding.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForScaleRequest(t, ns, "web", "Ready", inPhase(v1alpha1.PhaseReady))
}

// TestScaleTargetRefIsImmutable: a ScaleRequest stands for one workload; the API server refuses
// re-targeting with a message that says what to do instead.
func TestScaleTargetRefIsImmutable(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	createScaleRequest(t, newScaleRequest(ns, "web", "apps/v1", "Deployment", 1))
	_, err := client.ZerowakeV1alpha1().ScaleRequests(ns).Patch(testContext(t), "web", types.MergePatchType,
		[]byte(`{"spec":{"scaleTargetRef":{"name":"other"}}}`), metav1.PatchOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "scaleTargetRef is immutable") {
		t.Fatalf("re-targeting a ScaleRequest: want an Invalid error saying the reference is immutable, got %v", err)
	}
}

// TestMissingLeaseNamespaceExitsWithAdvice: a controller whose Lease namespace does not exist
// (only the CRDs installed, run from a laptop) exits non-zero with one line saying what to do.
func TestMissingLeaseNamespaceExitsWithAdvice(t *testing.T) {
	t.Parallel()
	// A person's own credentials, as when run from a laptop (the ServiceAccount could not even
	// ask for a Lease outside its namespace).
	c, err := framework.StartController(testContext(t), framework.ControllerOptions{
		Name: "no-lease-namespace", Binary: controllerBinary, Config: cluster.RESTConfig(), Dir: cluster.Dir(),
		Args: []string{"--leader-election-namespace=no-such-namespace"},
	})
	output := ""
	if err != nil {
		output = err.Error() // it exited before reporting ready
	} else {
		// The first attempt to create the Lease comes as soon as the cache has synced.
		select {
		case <-c.Done():
		case <-time.After(waitTimeout):
			c.Kill()
			t.Fatalf("the controller kept running without a Lease namespace:\n%s", c.Tail(20))
		}
		if code := c.ExitCode(); code == 0 {
			t.Fatalf("exit code 0 without a Lease namespace")
		}
		output = c.Tail(20)
	}
	for _, want := range []string{`namespace \"no-such-namespace\" does not exist`, "--leader-election-namespace", "--leader-elect=false"} {
		if !strings.Contains(output, want) {
			t.Fatalf("the exit does not say %q:\n%s", want, output)
		}
	}
}
