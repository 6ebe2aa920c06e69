package release

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/zerowake/zerowake/hack/localcluster"
)

// TestReleaseInstall: TestMain applied the bundle's zerowake-crds.yaml, zerowake.yaml and
// zerowake-gate.yaml. Their namespace enforces the restricted PodSecurity level, so the
// Deployments becoming Available means their pods were admitted under it; and each Deployment
// names its image just built, by digest.
func TestReleaseInstall(t *testing.T) {
	ctx := testContext(t)
	checkInstalled(t, ctx, "zerowake-system", "zerowake-controller", controllerImage)
	checkInstalled(t, ctx, "zerowake-system", "zerowake-gate", gateImage)
}

func checkInstalled(t *testing.T, ctx context.Context, namespace, name string, img *releasedImage) {
	t.Helper()
	ns, err := kube.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{})
	if err != nil || ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Fatalf("namespace %s does not enforce the restricted PodSecurity level: %v %v", namespace, err, ns.Labels)
	}
	if out, err := cluster.Kubectl(ctx, "wait", "-n", namespace, "--for=condition=Available", "deployment/"+name, "--timeout=60s"); err != nil {
		t.Fatalf("Deployment %s/%s not available (pods refused by PodSecurity?): %v\n%s", namespace, name, err, out)
	}
	d, err := kube.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if image := d.Spec.Template.Spec.Containers[0].Image; image != img.ref() {
		t.Errorf("Deployment %s/%s runs %s, want the image just built, %s", namespace, name, image, img.ref())
	}
	// Available without pods would be a surprise; the pods exist, so PodSecurity admitted them.
	pods, err := kube.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + name})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("no %s pods in %s: %v", name, namespace, err)
	}
}

// TestHelmChartMatchesKustomize renders the chart with the values that correspond to deploy/
// and deploy/namespaced/ and expects the same objects as kustomize renders from them.
func TestHelmChartMatchesKustomize(t *testing.T) {
	ctx := testContext(t)
	chart := filepath.Join(root, "deploy", "chart", "zerowake")
	for _, tc := range []struct {
		kustomization string
		values        []string
	}{
		{"deploy", nil},
		{"deploy/namespaced", []string{"--set", "namespaces={apps}"}},
	} {
		t.Run(tc.kustomization, func(t *testing.T) {
			want, err := cluster.Kubectl(ctx, "kustomize", filepath.Join(root, tc.kustomization))
			if err != nil {
				t.Fatal(err)
			}
			args := append([]string{"template", "zerowake", chart, "--namespace", "zerowake-system", "--set", "namespace.create=true"}, tc.values...)
			got, err := run(ctx, root, nil, helm, args...)
			if err != nil {
				t.Fatal(err)
			}
			wantObjects, gotObjects := objectsByName(t, want), objectsByName(t, got)
			for key, w := range wantObjects {
				g, ok := gotObjects[key]
				if !ok {
					t.Errorf("the chart does not render %s", key)
					continue
				}
				if !reflect.DeepEqual(g, w) {
					t.Errorf("the chart renders %s differently:\nchart:     %v\nkustomize: %v", key, g, w)
				}
			}
			for key := range gotObjects {
				if _, ok := wantObjects[key]; !ok {
					t.Errorf("the chart renders %s, which %s does not", key, tc.kustomization)
				}
			}
		})
	}
	// The chart's CRD is crds/'s.
	a, _ := os.ReadFile(filepath.Join(root, "crds", "zerowake.dev_scalerequests.yaml"))
	b, _ := os.ReadFile(filepath.Join(chart, "crds", "zerowake.dev_scalerequests.yaml"))
	if len(a) == 0 || string(a) != string(b) {
		t.Errorf("the chart's crds/ differs from crds/: run make generate")
	}
}

// TestHelmInstall installs the chart (helm template | kubectl apply, as GitOps tools do) under
// another release name and namespace, pinned to the images just built, with the gate serving a
// namespace of its own, and expects it to run next to the release YAML's install. The gate's
// ServiceAccount must hold what the gate needs there and nothing elsewhere (SubjectAccessReviews),
// and the gate image, run as that ServiceAccount with the chart's arguments, must wake through it.
func TestHelmInstall(t *testing.T) {
	ctx := testContext(t)
	chart := filepath.Join(root, "deploy", "chart", "zerowake")
	served := localcluster.NewNamespace(t, cluster)
	rendered, err := run(ctx, root, nil, helm, "template", "zw", chart, "--namespace", "zw-system", "--include-crds",
		"--set", "namespace.create=true", "--set", "image.digest="+controllerImage.digest, "--set", "replicaCount=1",
		"--set", "rescaleDuration=10s", "--set", "allowedKinds={Deployment.apps}",
		"--set", "gate.enabled=true", "--set", "gate.namespaces={"+served+"}", "--set", "gate.image.digest="+gateImage.digest)
	if err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(t.TempDir(), "zw.yaml")
	if err := os.WriteFile(manifest, []byte(rendered), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := cluster.Kubectl(ctx, "apply", "--server-side", "-f", manifest); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	checkInstalled(t, ctx, "zw-system", "zw-controller", controllerImage)
	d, err := kube.AppsV1().Deployments("zw-system").Get(ctx, "zw-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Join(d.Spec.Template.Spec.Containers[0].Args, " ")
	for _, want := range []string{"--rescale-duration=10s", "--allowed-kinds=Deployment.apps", "--leader-election-id=zw-controller"} {
		if !strings.Contains(args, want) {
			t.Errorf("Deployment args %q lack %s", args, want)
		}
	}
	if _, err := kube.RbacV1().ClusterRoleBindings().Get(ctx, "zw-controller", metav1.GetOptions{}); err != nil {
		t.Errorf("the chart's ClusterRoleBinding: %v", err)
	}

	t.Run("gate", func(t *testing.T) {
		checkInstalled(t, ctx, "zw-system", "zw-gate", gateImage)
		if _, err := kube.CoreV1().Services("zw-system").Get(ctx, "zw-gate", metav1.GetOptions{}); err != nil {
			t.Errorf("the gate's Service: %v", err)
		}
		if _, err := kube.PolicyV1().PodDisruptionBudgets("zw-system").Get(ctx, "zw-gate", metav1.GetOptions{}); err != nil {
			t.Errorf("the gate's PodDisruptionBudget: %v", err)
		}
		if _, err := kube.NetworkingV1().NetworkPolicies("zw-system").Get(ctx, "zw-gate", metav1.GetOptions{}); err != nil {
			t.Errorf("the gate's NetworkPolicy: %v", err)
		}
		checkGateAccess(t, ctx, "zw-system/zw-gate", []string{served}, "default")
		if t.Failed() {
			return
		}
		if _, err := cluster.Kubectl(ctx, "-n", "zw-system", "create", "secret", "generic", "zw-gate-token", "--from-literal=token="+gateToken); err != nil {
			t.Fatal(err)
		}
		gate, err := kube.AppsV1().Deployments("zw-system").Get(ctx, "zw-gate", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		skipUnlessAMD64(t)
		checkGateWakes(t, ctx, gate, served)
	})
}

// objectsByName decodes a multi-document manifest into objects keyed by kind, namespace and name.
func objectsByName(t *testing.T, manifest string) map[string]map[string]any {
	t.Helper()
	objects := map[string]map[string]any{}
	dec := yaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if obj == nil {
			continue
		}
		meta, _ := obj["metadata"].(map[string]any)
		key := fmt.Sprintf("%v %v/%v", obj["kind"], meta["namespace"], meta["name"])
		if _, dup := objects[key]; dup {
			t.Fatalf("%s twice", key)
		}
		objects[key] = obj
	}
	if len(objects) == 0 {
		t.Fatal("no objects rendered")
	}
	return objects
}
