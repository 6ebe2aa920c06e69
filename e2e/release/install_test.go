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
)

// TestReleaseInstall: TestMain applied the bundle's zerowake-crds.yaml and zerowake.yaml. Its
// namespace enforces the restricted PodSecurity level, so the Deployment becoming Available
// means its pods were admitted under it; and the Deployment names the image just built, by
// digest.
func TestReleaseInstall(t *testing.T) {
	ctx := testContext(t)
	checkInstalled(t, ctx, "zerowake-system", "zerowake-controller")
}

func checkInstalled(t *testing.T, ctx context.Context, namespace, name string) {
	t.Helper()
	ns, err := kube.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{})
	if err != nil || ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Fatalf("namespace %s does not enforce the restricted PodSecurity level: %v %v", namespace, err, ns.Labels)
	}
	if out, err := cluster.Kubectl(ctx, "wait", "-n", namespace, "--for=condition=Available", "deployment/"+name, "--timeout=60s"); err != nil {
		t.Fatalf("controller Deployment not available (pods refused by PodSecurity?): %v\n%s", err, out)
	}
	d, err := kube.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if image := d.Spec.Template.Spec.Containers[0].Image; image != imageName+"@"+digest {
		t.Errorf("Deployment %s/%s runs %s, want the image just built, %s@%s", namespace, name, image, imageName, digest)
	}
	// Available without pods would be a surprise; the pods exist, so PodSecurity admitted them.
	pods, err := kube.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + name})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("no controller pods in %s: %v", namespace, err)
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
// another release name and namespace, pinned to the image just built, and expects it to run
// next to the release YAML's install.
func TestHelmInstall(t *testing.T) {
	ctx := testContext(t)
	chart := filepath.Join(root, "deploy", "chart", "zerowake")
	rendered, err := run(ctx, root, nil, helm, "template", "zw", chart, "--namespace", "zw-system", "--include-crds",
		"--set", "namespace.create=true", "--set", "image.digest="+digest, "--set", "replicaCount=1",
		"--set", "rescaleDuration=10s", "--set", "allowedKinds={Deployment.apps}")
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
	checkInstalled(t, ctx, "zw-system", "zw-controller")
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
