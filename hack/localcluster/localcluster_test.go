package localcluster_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/zerowake/zerowake/hack/localcluster"
)

var cluster *localcluster.Cluster

func TestMain(m *testing.M) {
	localcluster.Main(m, localcluster.Options{}, func(c *localcluster.Cluster) error {
		cluster = c
		return nil
	})
}

func TestDeploymentBecomesReady(t *testing.T) {
	checkDeploymentBecomesReady(t)
}

func checkDeploymentBecomesReady(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ns := localcluster.NewNamespace(t, cluster)
	client := cluster.Client()

	labels := map[string]string{"app": "web"}
	deploy := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(2)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "example.invalid/web:1"}}},
			},
		},
	}
	start := time.Now()
	created, err := client.AppsV1().Deployments(ns).Create(ctx, deploy, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitForReadyReplicas(ctx, t, client, created, 2)
	t.Logf("2 replicas ready in %s", time.Since(start).Round(time.Millisecond))
}

func waitForReadyReplicas(ctx context.Context, t *testing.T, client kubernetes.Interface, d *appsv1.Deployment, want int32) {
	t.Helper()
	w, err := client.AppsV1().Deployments(d.Namespace).Watch(ctx, metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("metadata.name", d.Name).String(),
		ResourceVersion: d.ResourceVersion,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	last := d
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch closed; last status %+v", last.Status)
			}
			if ev.Type == watch.Error {
				t.Fatalf("watch: %v", apierrors.FromObject(ev.Object))
			}
			if got, ok := ev.Object.(*appsv1.Deployment); ok {
				last = got
				if got.Status.ReadyReplicas == want {
					return
				}
			}
		case <-ctx.Done():
			t.Fatalf("readyReplicas did not reach %d: %v; last status %+v", want, ctx.Err(), last.Status)
		}
	}
}

func TestKubectlMatchesServer(t *testing.T) {
	out, err := cluster.Kubectl(t.Context(), "version", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		ClientVersion struct{ GitVersion string }
		ServerVersion struct{ GitVersion string }
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("parsing %q: %v", out, err)
	}
	const want = "v1.37.2"
	if v.ServerVersion.GitVersion != want || v.ClientVersion.GitVersion != want {
		t.Errorf("kubectl version: client %q, server %q; want %q for both", v.ClientVersion.GitVersion, v.ServerVersion.GitVersion, want)
	}
}

func TestRBACIsEnforced(t *testing.T) {
	ctx := t.Context()
	ns := localcluster.NewNamespace(t, cluster)
	sa, err := cluster.Client().CoreV1().ServiceAccounts(ns).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nobody"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	config, err := cluster.ServiceAccountConfig(ctx, ns, sa.Name)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		t.Fatal(err)
	}

	// The token must authenticate (a 401 would prove nothing about authorization)...
	review, err := client.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("the minted token does not authenticate: %v", err)
	}
	if want := "system:serviceaccount:" + ns + ":nobody"; review.Status.UserInfo.Username != want {
		t.Errorf("authenticated as %q, want %q", review.Status.UserInfo.Username, want)
	}
	// ...and the identity must be refused what no role grants it.
	_, err = client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("listing secrets as a bare ServiceAccount: got %v, want Forbidden", err)
	}
}

func TestRestartAPIServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	start := time.Now()
	if err := cluster.RestartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted in %s", time.Since(start).Round(time.Millisecond))
	if _, err := cluster.Client().CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("API after restart: %v", err)
	}
	// The rest of the plane must reconnect: a new Deployment still becomes ready.
	checkDeploymentBecomesReady(t)
}
