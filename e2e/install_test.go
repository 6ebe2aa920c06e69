package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zerowake/zerowake/hack/localcluster"
)

// TestInstallManifests: TestMain installed crds/ and deploy/ with kubectl apply -k; here the
// namespaced variant is checked by a server-side dry run, and the installed Deployment is
// checked against the namespace's PodSecurity level.
func TestInstallManifests(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	// The namespaced variant's Role lives in the namespace it serves.
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.CoreV1().Namespaces().Delete(ctx, "apps", metav1.DeleteOptions{}) })
	root, err := localcluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cluster.Kubectl(ctx, "apply", "--dry-run=server", "-k", filepath.Join(root, "deploy", "namespaced"))
	if err != nil {
		t.Fatalf("namespaced variant: %v", err)
	}
	if !strings.Contains(out, "role.rbac.authorization.k8s.io/zerowake-controller") {
		t.Errorf("namespaced variant has no Role:\n%s", out)
	}

	ns, err := kube.CoreV1().Namespaces().Get(ctx, "zerowake-system", metav1.GetOptions{})
	if err != nil || ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Fatalf("install namespace does not enforce the restricted PodSecurity level: %v %v", err, ns.Labels)
	}
	// The apiserver admitted the Deployment's pods under "restricted": they exist.
	out, err = cluster.Kubectl(ctx, "wait", "-n", "zerowake-system", "--for=condition=Available", "deployment/zerowake-controller", "--timeout=45s")
	if err != nil {
		t.Fatalf("installed controller Deployment not available: %v\n%s", err, out)
	}
}
