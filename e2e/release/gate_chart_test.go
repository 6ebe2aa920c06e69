package release

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestHelmLint lints the chart with the gate off, serving listed namespaces, and serving all
// namespaces with its PodMonitor.
func TestHelmLint(t *testing.T) {
	ctx := testContext(t)
	chart := filepath.Join(root, "deploy", "chart", "zerowake")
	for _, values := range [][]string{
		nil,
		{"--set", "gate.enabled=true", "--set", "gate.namespaces={shop,blog}"},
		{"--set", "gate.enabled=true", "--set", "gate.allNamespaces=true", "--set", "gate.podMonitor.enabled=true", "--set", "gate.shutdownDelay=5s"},
	} {
		if out, err := run(ctx, root, nil, helm, append([]string{"lint", "--strict", chart}, values...)...); err != nil {
			t.Errorf("helm lint %v: %v\n%s", values, err, out)
		}
	}
}

// helmTemplate renders the chart as release "zerowake" in zerowake-system with values.
func helmTemplate(t *testing.T, ctx context.Context, values ...string) (map[string]map[string]any, error) {
	t.Helper()
	chart := filepath.Join(root, "deploy", "chart", "zerowake")
	out, err := run(ctx, root, nil, helm, append([]string{"template", "zerowake", chart, "--namespace", "zerowake-system"}, values...)...)
	if err != nil {
		return nil, err
	}
	return objectsByName(t, out), nil
}

// gateContainer returns the gate Deployment's pod spec and container from rendered objects.
func gateContainer(t *testing.T, objects map[string]map[string]any, key string) (podSpec, container map[string]any) {
	t.Helper()
	d, ok := objects[key]
	if !ok {
		t.Fatalf("no %s rendered", key)
	}
	podSpec = dig(d, "spec", "template", "spec").(map[string]any)
	return podSpec, podSpec["containers"].([]any)[0].(map[string]any)
}

// clusterKey is objectsByName's key for a cluster-scoped object.
func clusterKey(kind, name string) string { return fmt.Sprintf("%v %v/%v", kind, nil, name) }

func dig(obj any, path ...string) any {
	for _, p := range path {
		m, _ := obj.(map[string]any)
		obj = m[p]
	}
	return obj
}

func stringList(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

// TestHelmTemplateGate renders the gate's values one at a time and checks what each changes.
func TestHelmTemplateGate(t *testing.T) {
	ctx := testContext(t)
	const deployment = "Deployment zerowake-system/zerowake-gate"

	t.Run("off by default", func(t *testing.T) {
		objects, err := helmTemplate(t, ctx)
		if err != nil {
			t.Fatal(err)
		}
		for key := range objects {
			if strings.Contains(key, "gate") {
				t.Errorf("the gate is off by default, yet %s is rendered", key)
			}
		}
	})

	t.Run("namespaces required", func(t *testing.T) {
		_, err := helmTemplate(t, ctx, "--set", "gate.enabled=true")
		if err == nil || !strings.Contains(err.Error(), "gate.namespaces") {
			t.Errorf("a gate serving neither listed namespaces nor all rendered: %v", err)
		}
		_, err = helmTemplate(t, ctx, "--set", "gate.enabled=true", "--set", "gate.namespaces={shop}", "--set", "gate.networkPolicy.proxies=null")
		if err == nil || !strings.Contains(err.Error(), "gate.networkPolicy.proxies") {
			t.Errorf("a NetworkPolicy admitting no proxy rendered: %v", err)
		}
	})

	t.Run("defaults", func(t *testing.T) {
		objects, err := helmTemplate(t, ctx, "--set", "gate.enabled=true", "--set", "namespaces={shop,blog}", "--set", "rescaleDuration=10s")
		if err != nil {
			t.Fatal(err)
		}
		podSpec, container := gateContainer(t, objects, deployment)
		args := stringList(container["args"])
		// The controller's namespaces and cool-down are the gate's unless set apart.
		for _, want := range []string{"--namespaces=shop,blog", "--window=10s", "--shutdown-delay=5s", "--shutdown-grace=20s", "--auth-token-file=/var/run/zerowake-gate/token"} {
			if !slices.Contains(args, want) {
				t.Errorf("args %q lack %s", args, want)
			}
		}
		// SIGTERM: the gate's default 5s shutdown delay, then the 20s grace, then its answers.
		if grace := podSpec["terminationGracePeriodSeconds"]; fmt.Sprint(grace) != "35" {
			t.Errorf("terminationGracePeriodSeconds %v, want 35 (5s delay + 20s grace + margin)", grace)
		}
		if replicas := dig(objects[deployment], "spec", "replicas"); fmt.Sprint(replicas) != "2" {
			t.Errorf("replicas %v, want 2", replicas)
		}
		for _, ns := range []string{"shop", "blog"} {
			for _, kind := range []string{"Role", "RoleBinding"} {
				if _, ok := objects[kind+" "+ns+"/zerowake-gate"]; !ok {
					t.Errorf("no %s for the gate in %s", kind, ns)
				}
			}
		}
		for key := range objects {
			if strings.HasPrefix(key, "ClusterRole") && strings.Contains(key, "gate") {
				t.Errorf("a gate serving listed namespaces has cluster rights: %s", key)
			}
		}
		probes := map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"}
		for probe, path := range probes {
			if got := dig(container, probe, "httpGet", "path"); got != path || dig(container, probe, "httpGet", "port") != "ops" {
				t.Errorf("%s: %v on port %v, want %s on ops", probe, got, dig(container, probe, "httpGet", "port"), path)
			}
		}
		pdb, ok := objects["PodDisruptionBudget zerowake-system/zerowake-gate"]
		if !ok || fmt.Sprint(dig(pdb, "spec", "maxUnavailable")) != "1" {
			t.Errorf("PodDisruptionBudget %v", pdb)
		}
		for _, key := range []string{"Service zerowake-system/zerowake-gate", "ServiceAccount zerowake-system/zerowake-gate", "NetworkPolicy zerowake-system/zerowake-gate"} {
			if _, ok := objects[key]; !ok {
				t.Errorf("no %s", key)
			}
		}
	})

	t.Run("values", func(t *testing.T) {
		objects, err := helmTemplate(t, ctx, "--set", "gate.enabled=true", "--set", "gate.allNamespaces=true",
			"--set", "gate.shutdownDelay=7s", "--set", "gate.shutdownGrace=40s", "--set", "gate.terminationGracePeriodSeconds=55",
			"--set", "gate.authToken.enabled=false", "--set", "gate.replicaCount=3", "--set", "gate.podDisruptionBudget.enabled=false",
			"--set", "gate.podMonitor.enabled=true", "--set", "gate.podMonitor.labels.release=prometheus",
			"--set", "gate.image.digest=sha256:0123", "--set", "gate.networkPolicy.scrapers=null")
		if err != nil {
			t.Fatal(err)
		}
		podSpec, container := gateContainer(t, objects, deployment)
		args := stringList(container["args"])
		for _, want := range []string{"--all-namespaces", "--shutdown-delay=7s", "--shutdown-grace=40s"} {
			if !slices.Contains(args, want) {
				t.Errorf("args %q lack %s", args, want)
			}
		}
		for _, a := range args {
			if strings.HasPrefix(a, "--namespaces") || strings.HasPrefix(a, "--auth-token-file") {
				t.Errorf("args %q pass %s", args, a)
			}
		}
		if podSpec["volumes"] != nil || container["volumeMounts"] != nil {
			t.Errorf("without a token, the pod mounts %v %v", podSpec["volumes"], container["volumeMounts"])
		}
		if fmt.Sprint(podSpec["terminationGracePeriodSeconds"]) != "55" || container["image"] != "ghcr.io/zerowake/zerowake-gate@sha256:0123" {
			t.Errorf("terminationGracePeriodSeconds %v, image %v", podSpec["terminationGracePeriodSeconds"], container["image"])
		}
		for _, key := range []string{clusterKey("ClusterRole", "zerowake-gate"), clusterKey("ClusterRoleBinding", "zerowake-gate")} {
			if _, ok := objects[key]; !ok {
				t.Errorf("a gate serving every namespace has no %s", key)
			}
		}
		if _, ok := objects["PodDisruptionBudget zerowake-system/zerowake-gate"]; ok {
			t.Error("PodDisruptionBudget rendered although disabled")
		}
		policy := objects["NetworkPolicy zerowake-system/zerowake-gate"]
		if rules := dig(policy, "spec", "ingress").([]any); len(rules) != 1 {
			t.Errorf("with no scrapers, the NetworkPolicy should admit only proxies: %v", rules)
		}
		monitor, ok := objects["PodMonitor zerowake-system/zerowake-gate"]
		if !ok {
			t.Fatal("no PodMonitor")
		}
		if dig(monitor, "metadata", "labels", "release") != "prometheus" {
			t.Errorf("PodMonitor labels %v", dig(monitor, "metadata", "labels"))
		}
		podLabels := dig(objects[deployment], "spec", "template", "metadata", "labels").(map[string]any)
		for k, v := range dig(monitor, "spec", "selector", "matchLabels").(map[string]any) {
			if podLabels[k] != v {
				t.Errorf("PodMonitor selects %s=%v, the gate's pods have %v", k, v, podLabels[k])
			}
		}
		ports := map[any]bool{}
		for _, p := range container["ports"].([]any) {
			ports[p.(map[string]any)["name"]] = true
		}
		for _, e := range dig(monitor, "spec", "podMetricsEndpoints").([]any) {
			if port := e.(map[string]any)["port"]; !ports[port] {
				t.Errorf("PodMonitor scrapes port %v, which the gate's container does not name", port)
			}
		}
	})
}

// endpointSliceRule is the gate's right to read the EndpointSlices of the namespaces it
// serves (routes that name a Service pass once its slices list ready endpoints).
const endpointSliceRule = "discovery.k8s.io|endpointslices|get,list,watch"

// TestHelmChartGateMirrorsKustomize renders the gate from the chart with the values that
// correspond to deploy/gate/ and deploy/gate-all-namespaces/ and compares it with what
// kustomize renders from them. By design the chart differs in three ways: the rights sit in a
// Role per namespace (deploy/gate binds a ClusterRole per namespace), a PodDisruptionBudget is
// added, and the shutdown flags and the termination grace period come from values.
func TestHelmChartGateMirrorsKustomize(t *testing.T) {
	ctx := testContext(t)
	for _, tc := range []struct {
		kustomization string
		values        []string
	}{
		{"deploy/gate", []string{"--set", "gate.enabled=true", "--set", "gate.namespaces={default}"}},
		{"deploy/gate-all-namespaces", []string{"--set", "gate.enabled=true", "--set", "gate.allNamespaces=true"}},
	} {
		t.Run(tc.kustomization, func(t *testing.T) {
			out, err := cluster.Kubectl(ctx, "kustomize", filepath.Join(root, tc.kustomization))
			if err != nil {
				t.Fatal(err)
			}
			want := objectsByName(t, out)
			got, err := helmTemplate(t, ctx, tc.values...)
			if err != nil {
				t.Fatal(err)
			}
			wantRules := ruleSet(dig(want[clusterKey("ClusterRole", "zerowake-gate")], "rules"))
			for key, w := range want {
				kind, _, _ := strings.Cut(key, " ")
				switch kind {
				case "ClusterRole":
					continue // compared with the chart's Roles or ClusterRole below
				case "RoleBinding":
					// The chart binds its own Role; the subjects are the same.
					g, ok := got[key]
					if !ok {
						t.Errorf("the chart does not render %s", key)
					} else if !reflect.DeepEqual(g["subjects"], w["subjects"]) || dig(g, "roleRef", "kind") != "Role" {
						t.Errorf("%s: chart %v, kustomize %v", key, g, w)
					}
					continue
				case "Deployment":
					g, ok := got[key]
					if !ok {
						t.Errorf("the chart does not render %s", key)
						continue
					}
					compareGateDeployments(t, g, w)
					continue
				}
				if g, ok := got[key]; !ok {
					t.Errorf("the chart does not render %s", key)
				} else if !reflect.DeepEqual(g, w) {
					t.Errorf("the chart renders %s differently:\nchart:     %v\nkustomize: %v", key, g, w)
				}
			}
			// The rights, wherever the chart puts them, are deploy/gate/rbac.yaml's.
			for key, g := range got {
				kind, _, _ := strings.Cut(key, " ")
				if !strings.HasSuffix(key, "/zerowake-gate") || (kind != "Role" && kind != "ClusterRole") {
					continue
				}
				gotRules := ruleSet(g["rules"])
				for r := range wantRules {
					if !gotRules[r] {
						t.Errorf("%s lacks deploy/gate's rule %s", key, r)
					}
				}
				for r := range gotRules {
					if !wantRules[r] {
						t.Errorf("%s grants %s, which deploy/gate does not", key, r)
					}
				}
				if !gotRules[endpointSliceRule] {
					t.Errorf("%s does not let the gate read EndpointSlices", key)
				}
			}
			for key := range got {
				kind, _, _ := strings.Cut(key, " ")
				if _, ok := want[key]; !ok && strings.HasSuffix(key, "/zerowake-gate") && kind != "Role" && kind != "PodDisruptionBudget" {
					t.Errorf("the chart renders %s, which %s does not", key, tc.kustomization)
				}
			}
		})
	}
}

// compareGateDeployments expects the chart's gate Deployment to equal kustomize's but for the
// shutdown flags, which the chart passes from values, and a termination grace period at least
// as long.
func compareGateDeployments(t *testing.T, chart, kustomize map[string]any) {
	t.Helper()
	normalize := func(d map[string]any) (map[string]any, float64) {
		d = deepCopyJSON(d).(map[string]any)
		podSpec := dig(d, "spec", "template", "spec").(map[string]any)
		grace, _ := podSpec["terminationGracePeriodSeconds"].(float64)
		delete(podSpec, "terminationGracePeriodSeconds")
		container := podSpec["containers"].([]any)[0].(map[string]any)
		var args []string
		for _, a := range stringList(container["args"]) {
			if !strings.HasPrefix(a, "--shutdown-") {
				args = append(args, a)
			}
		}
		sort.Strings(args)
		container["args"] = args
		return d, grace
	}
	c, cGrace := normalize(chart)
	k, kGrace := normalize(kustomize)
	if !reflect.DeepEqual(c, k) {
		t.Errorf("the chart renders the gate Deployment differently:\nchart:     %v\nkustomize: %v", c, k)
	}
	if cGrace < kGrace {
		t.Errorf("the chart's terminationGracePeriodSeconds %v is shorter than deploy/gate's %v", cGrace, kGrace)
	}
}

func deepCopyJSON(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, x := range v {
			out[k] = deepCopyJSON(x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = deepCopyJSON(x)
		}
		return out
	default:
		return v
	}
}

// ruleSet flattens RBAC rules to "groups|resources|verbs" strings with sorted lists.
func ruleSet(rules any) map[string]bool {
	set := map[string]bool{}
	list, _ := rules.([]any)
	for _, r := range list {
		rule := r.(map[string]any)
		var parts []string
		for _, field := range []string{"apiGroups", "resources", "verbs"} {
			values := stringList(rule[field])
			sort.Strings(values)
			parts = append(parts, strings.Join(values, ","))
		}
		set[strings.Join(parts, "|")] = true
	}
	return set
}

// gateAccess is one request the gate makes, or must not be able to make.
type gateAccess struct {
	group, resource, subresource, verb string
}

// gateNeeds is every request the gate makes in a namespace it serves: ScaleRequests (signal
// and informer), the workload kinds routes name (opt-in and cap), EndpointSlices (the Service
// is ready for the proxy).
var gateNeeds = []gateAccess{
	{"zerowake.dev", "scalerequests", "", "create"}, {"zerowake.dev", "scalerequests", "", "patch"},
	{"zerowake.dev", "scalerequests", "", "get"}, {"zerowake.dev", "scalerequests", "", "list"},
	{"zerowake.dev", "scalerequests", "", "watch"},
	{"apps", "deployments", "", "list"}, {"apps", "deployments", "", "watch"},
	{"apps", "statefulsets", "", "list"}, {"apps", "statefulsets", "", "watch"},
	{"argoproj.io", "rollouts", "", "list"}, {"argoproj.io", "rollouts", "", "watch"},
	{"discovery.k8s.io", "endpointslices", "", "get"}, {"discovery.k8s.io", "endpointslices", "", "list"},
	{"discovery.k8s.io", "endpointslices", "", "watch"},
}

// gateMustNot is what the gate never needs: it asks for a wake, the controller scales.
var gateMustNot = []gateAccess{
	{"apps", "deployments", "scale", "patch"}, {"apps", "deployments", "", "patch"},
	{"zerowake.dev", "scalerequests", "status", "update"}, {"zerowake.dev", "scalerequests", "", "delete"},
	{"", "pods", "", "list"}, {"", "secrets", "", "get"},
}

// allowed asks the API server whether the ServiceAccount namespace/name may make request a in
// namespace ns ("" for cluster-wide).
func allowed(t *testing.T, ctx context.Context, serviceAccount, ns string, a gateAccess) bool {
	t.Helper()
	saNamespace, _, _ := strings.Cut(serviceAccount, "/")
	review, err := kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   "system:serviceaccount:" + strings.Replace(serviceAccount, "/", ":", 1),
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + saNamespace, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: ns, Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.subresource,
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return review.Status.Allowed
}

// checkGateAccess checks the gate ServiceAccount's rights with SubjectAccessReviews: all it
// needs in each served namespace, none of it elsewhere or cluster-wide, and nothing more.
func checkGateAccess(t *testing.T, ctx context.Context, serviceAccount string, served []string, unserved string) {
	t.Helper()
	for _, ns := range served {
		for _, a := range gateNeeds {
			if !allowed(t, ctx, serviceAccount, ns, a) {
				t.Errorf("%s may not %+v in %s, which it serves", serviceAccount, a, ns)
			}
		}
		for _, a := range gateMustNot {
			if allowed(t, ctx, serviceAccount, ns, a) {
				t.Errorf("%s may %+v in %s; the gate needs no such right", serviceAccount, a, ns)
			}
		}
	}
	for _, ns := range []string{unserved, ""} {
		for _, a := range gateNeeds {
			if allowed(t, ctx, serviceAccount, ns, a) {
				t.Errorf("%s may %+v in %q, which it does not serve", serviceAccount, a, ns)
			}
		}
	}
}
