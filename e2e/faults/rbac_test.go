package faults

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/e2e/framework"
	"github.com/zerowake/zerowake/hack/localcluster"
)

var update = flag.Bool("update", false, "rewrite the expected kubectl auth can-i lists in testdata/ from what the server says")

// canIList runs `kubectl auth can-i --list` in each namespace as the identity in config, and
// returns the rows in a stable form: runs of spaces collapsed, sorted, under a line per namespace.
func canIList(t *testing.T, config *rest.Config, namespaces ...string) string {
	t.Helper()
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := framework.WriteKubeconfig(kubeconfig, config); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, ns := range namespaces {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, cluster.KubectlPath(), "--kubeconfig="+kubeconfig, "--cache-dir="+filepath.Join(dir, "cache"),
			"auth", "can-i", "--list", "--namespace="+ns).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("kubectl auth can-i --list -n %s: %v\n%s", ns, err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		header, rows := strings.Join(strings.Fields(lines[0]), " "), lines[1:]
		for i := range rows {
			rows[i] = strings.Join(strings.Fields(rows[i]), " ")
		}
		slices.Sort(rows)
		fmt.Fprintf(&b, "== namespace %s\n%s\n%s\n", ns, header, strings.Join(rows, "\n"))
	}
	return b.String()
}

// checkCanIList compares a can-i list with the checked-in file, exactly: any right added to
// the controller's identity, or taken away, fails until the file is updated and reviewed.
func checkCanIList(t *testing.T, file, preamble, got string) {
	t.Helper()
	path := filepath.Join("testdata", file)
	if *update {
		if err := os.WriteFile(path, []byte(preamble+got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for line := range strings.SplitSeq(string(data), "\n") {
		if !strings.HasPrefix(line, "#") {
			want = append(want, line)
		}
	}
	if w := strings.Join(want, "\n"); w != got {
		t.Fatalf("kubectl auth can-i --list differs from %s (run with -update to rewrite it, then review the diff)\n%s",
			path, lineDiff(w, got))
	}
}

// lineDiff lists the lines only in want (-) and only in got (+).
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for _, l := range w {
		if !slices.Contains(g, l) {
			fmt.Fprintf(&b, "- %s\n", l)
		}
	}
	for _, l := range g {
		if !slices.Contains(w, l) {
			fmt.Fprintf(&b, "+ %s\n", l)
		}
	}
	return b.String()
}

// TestControllerCanIList: what the ServiceAccount deploy/ installs may do, as kubectl lists it
// for that identity's own token, is exactly the checked-in list: in a namespace it serves, and in
// its own namespace (where it also holds the leader-election Lease).
func TestControllerCanIList(t *testing.T) {
	config, err := cluster.ServiceAccountConfig(testContext(t, 30*time.Second), installNamespace, "zerowake-controller")
	if err != nil {
		t.Fatal(err)
	}
	checkCanIList(t, "controller-can-i.txt", `# kubectl auth can-i --list for the ServiceAccount zerowake-system/zerowake-controller, installed
# by deploy/ (ClusterRole zerowake-controller, Role zerowake-controller-leader-election), with the
# rows' spaces collapsed and sorted. e2e/faults fails on any difference. Regenerate with
#   go test ./e2e/faults -run TestControllerCanIList -update
# and review the diff: a line added here is a right the controller gains. The rows without a
# zerowake rule (self*reviews, clustertrustbundles, non-resource URLs) are what every
# authenticated identity gets from Kubernetes' bootstrap RBAC policy.
`, canIList(t, config, "default", installNamespace))
}

// TestNamespacedInstall: the Role variant in deploy/namespaced serves its one namespace ("apps")
// and nothing else. The controller, run with the install's own arguments as an identity with only
// that Role and the leader-election Role, neither reads nor writes anything in another
// namespace ("shop"), as the audit log shows, and a request in "apps" cannot name a target in
// "shop": the API has no field for it, and a name cannot smuggle one in.
func TestNamespacedInstall(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t, 3*time.Minute)
	const served, other = "apps", "shop"
	for _, ns := range []string{served, other} {
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	root, err := localcluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Kubectl(ctx, "apply", "--server-side", "-k", filepath.Join(root, "deploy", "namespaced")); err != nil {
		t.Fatal(err)
	}

	// An identity with only the namespaced install's rights. (The install's own ServiceAccount
	// also has deploy/'s ClusterRole in this cluster, which the other tests need.)
	const name = "namespaced"
	if _, err := kube.CoreV1().ServiceAccounts(installNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.RbacV1().RoleBindings(served).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "faults-" + name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "zerowake-controller"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: installNamespace}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bindLeaderElection(t, name)
	config, err := cluster.ServiceAccountConfig(ctx, installNamespace, name)
	if err != nil {
		t.Fatal(err)
	}
	id := identity{name: name, user: serviceAccountUser(name), config: config}
	checkCanIList(t, "namespaced-can-i.txt", `# kubectl auth can-i --list for an identity bound only to the Roles of deploy/namespaced
# (zerowake-controller in "apps", zerowake-controller-leader-election in zerowake-system): in the
# namespace it serves, and in any other. e2e/faults fails on any difference; regenerate with
#   go test ./e2e/faults -run TestNamespacedInstall -update
`, canIList(t, config, served, other))

	// The controller runs with the arguments the namespaced install gives it.
	installed, err := kube.AppsV1().Deployments(installNamespace).Get(ctx, "zerowake-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, a := range installed.Spec.Template.Spec.Containers[0].Args {
		if !strings.HasPrefix(a, "--ops-address") && !strings.HasPrefix(a, "--log-format") {
			args = append(args, a)
		}
	}
	if !slices.Contains(args, "--namespaces="+served) {
		t.Fatalf("the namespaced install does not confine the controller to %q: %v", served, args)
	}
	args = append(args, "--rescale-duration=2s")
	t.Logf("install arguments: %v", args)

	for _, ns := range []string{served, other} {
		if _, err := kube.AppsV1().Deployments(ns).Create(ctx, deployment(ns, "web", 0), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kube.AppsV1().Deployments(other).Create(ctx, deployment(other, "payments", 0), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	f.start("namespaced", id, "faults-namespaced", args...)
	f.createRequest(served, scaleRequest(served, "web", 1))
	f.createRequest(other, scaleRequest(other, "web", 1))
	// "payments" exists only in the other namespace.
	f.createRequest(served, scaleRequest(served, "payments", 1))

	f.waitForPhase(served, "web", v1alpha1.PhaseReady, 30*time.Second)
	sr := f.waitForPhase(served, "payments", v1alpha1.PhaseFailed, 30*time.Second)
	if cond := meta.FindStatusCondition(sr.Status.Conditions, v1alpha1.ConditionScaled); cond == nil || cond.Reason != v1alpha1.ReasonTargetNotFound {
		f.fatalf("request for a target only in another namespace: %s", framework.DescribeStatus(sr))
	}
	// Give the controller a rescale window's re-check to go wrong in, then look.
	time.Sleep(3 * time.Second)
	for _, ns := range []string{served, other} {
		d, err := kube.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := int32(1)
		if ns == other {
			want = 0
		}
		if *d.Spec.Replicas != want {
			f.fatalf("%s/web has %d replicas, want %d", ns, *d.Spec.Replicas, want)
		}
	}
	if d, err := kube.AppsV1().Deployments(other).Get(ctx, "payments", metav1.GetOptions{}); err != nil || *d.Spec.Replicas != 0 {
		f.fatalf("%s/payments was touched: %v %v", other, err, d)
	}
	untouched, err := client.ZerowakeV1alpha1().ScaleRequests(other).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if untouched.Status.ObservedGeneration != 0 || len(untouched.Status.Conditions) != 0 {
		f.fatalf("a request in %s, which the controller does not serve, has status from it: %s", other, framework.DescribeStatus(untouched))
	}

	// The audit log: every request this identity made stayed in its namespaces.
	requests := auditLog(t, byUser(id.user))
	counts := map[string]int{}
	for _, e := range requests {
		if e.code() == 403 {
			f.fatalf("the controller was refused something (it should not even try): %v", e)
		}
		if e.ObjectRef == nil {
			counts["(discovery)"]++
			continue
		}
		if e.Received.Before(&metav1.MicroTime{Time: start}) {
			continue
		}
		switch e.ObjectRef.Namespace {
		case served, installNamespace:
			counts[e.ObjectRef.Namespace]++
		default:
			f.fatalf("the controller reached outside %s: %v", served, e)
		}
	}
	t.Logf("audit: %d requests by %s, by namespace: %v", len(requests), id.user, counts)

	// By construction: the reference has no namespace field, and the name cannot carry one.
	dyn, err := dynamic.NewForConfig(cluster.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	resource := dyn.Resource(v1alpha1.SchemeGroupVersion.WithResource("scalerequests")).Namespace(served)
	for _, tc := range []struct {
		name       string
		ref        map[string]any
		validation string
		want       string
	}{
		{"path in the name", map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": other + "/web"}, metav1.FieldValidationStrict,
			"name must be a lowercase DNS subdomain name"},
		{"relative path in the name", map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": "../" + other + "/web"}, metav1.FieldValidationStrict,
			"name must be a lowercase DNS subdomain name"},
		{"namespace field", map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": other}, metav1.FieldValidationStrict,
			`unknown field "spec.scaleTargetRef.namespace"`},
		{"namespace field, unchecked", map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": other}, metav1.FieldValidationIgnore, ""},
	} {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": "ScaleRequest",
			"metadata": map[string]any{"name": "cross"}, "spec": map[string]any{"scaleTargetRef": tc.ref},
		}}
		created, err := resource.Create(ctx, obj, metav1.CreateOptions{FieldValidation: tc.validation})
		if tc.want != "" {
			if err == nil || !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) || !strings.Contains(err.Error(), tc.want) {
				f.fatalf("%s: want it refused with %q, got %v", tc.name, tc.want, err)
			}
			continue
		}
		// Without strict validation the field is pruned: what is stored names a target in the
		// request's own namespace.
		if err != nil {
			f.fatalf("%s: %v", tc.name, err)
		}
		if _, found, _ := unstructured.NestedString(created.Object, "spec", "scaleTargetRef", "namespace"); found {
			f.fatalf("%s: the namespace field was stored: %v", tc.name, created.Object["spec"])
		}
		if err := resource.Delete(ctx, "cross", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}
