package framework

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/zerowake/zerowake/hack/localcluster"
)

// What a zerowake install on the real node is made of: the images, the release and the names
// the chart gives the controller, the gate and the gate's token Secret.
const (
	// NodeImageVersion tags the images built for the node; nothing pulls them.
	NodeImageVersion = "node"
	nodeImagePrefix  = "zerowake.local/"

	ReleaseNamespace = "zerowake-system"
	ControllerName   = "zerowake-controller"
	GateName         = "zerowake-gate"
	// GatePort is the gate's forward-auth port (the chart's gate.service.port), OpsPort the
	// operations port (metrics, probes) of both binaries.
	GatePort = 8000
	OpsPort  = 8080
	// AppPort is where hack/testapp listens.
	AppPort = 8080
)

// NodeImages are the images the real node runs, built by hack/tools/image.
var NodeImages = []string{"zerowake-controller", "zerowake-gate", "testapp"}

// NodeImageRef is the reference image name is imported under.
func NodeImageRef(name string) string { return nodeImagePrefix + name + ":" + NodeImageVersion }

// BuildNodeImages builds NodeImages for this machine's architecture only into out (one
// directory per image, its OCI layout in oci/), as `make image` builds the shipped ones.
func BuildNodeImages(ctx context.Context, out string) error {
	root, err := localcluster.RepoRoot()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "run", ".", "-root", root, "-version", NodeImageVersion, "-out", out,
		"-images", strings.Join(NodeImages, ","), "-platforms", "linux/"+runtime.GOARCH)
	cmd.Dir = filepath.Join(root, "hack", "tools", "image")
	if output, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building the node's images: %v\n%s", err, output)
	}
	return nil
}

// ImportNodeImages imports the images BuildNodeImages wrote to out into the node.
func ImportNodeImages(ctx context.Context, node *localcluster.Node, out string) error {
	for _, name := range NodeImages {
		if err := node.ImportImage(ctx, filepath.Join(out, name, "oci"), NodeImageRef(name)); err != nil {
			return fmt.Errorf("importing %s: %w", name, err)
		}
	}
	return nil
}

// HelmPath returns where hack/tools.sh keeps helm, building it if it is missing.
func HelmPath(ctx context.Context) (string, error) {
	root, err := localcluster.RepoRoot()
	if err != nil {
		return "", err
	}
	tools := filepath.Join(root, "hack", "tools.sh")
	if out, err := exec.CommandContext(ctx, "bash", tools, "helm").CombinedOutput(); err != nil {
		return "", fmt.Errorf("hack/tools.sh helm: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, "bash", tools, "path", "helm").Output()
	if err != nil {
		return "", fmt.Errorf("hack/tools.sh path helm: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// ChartInstall says how InstallChart installs zerowake.
type ChartInstall struct {
	// AppNamespaces are the namespaces the gate serves.
	AppNamespaces []string
	// GateToken is put in the gate's token Secret; proxies send it.
	GateToken string
	// Set are more `helm --set` values.
	Set []string
}

// InstallChart installs deploy/chart/zerowake as release "zerowake" in zerowake-system, as
// its README tells a user, from the images ImportNodeImages put on the node (pull policy
// Never), with the gate on and every pod on the real node, and waits until the controller
// and the gate Deployments are available.
func InstallChart(ctx context.Context, c *localcluster.Cluster, opts ChartInstall) error {
	root, err := localcluster.RepoRoot()
	if err != nil {
		return err
	}
	helm, err := HelmPath(ctx)
	if err != nil {
		return err
	}
	if _, err := c.Kubectl(ctx, "create", "namespace", ReleaseNamespace); err != nil {
		return err
	}
	if _, err := c.Kubectl(ctx, "-n", ReleaseNamespace, "create", "secret", "generic", GateName+"-token",
		"--from-literal=token="+opts.GateToken); err != nil {
		return err
	}
	node := c.Node().Name()
	args := []string{"install", "zerowake", filepath.Join(root, "deploy", "chart", "zerowake"),
		"--kubeconfig", c.Kubeconfig(), "--namespace", ReleaseNamespace, "--wait", "--timeout", "3m",
		"--set", "image.repository=" + nodeImagePrefix + "zerowake-controller",
		"--set", "image.tag=" + NodeImageVersion,
		"--set", "image.pullPolicy=Never",
		"--set", "nodeSelector.kubernetes\\.io/hostname=" + node,
		"--set", "gate.enabled=true",
		"--set", "gate.namespaces={" + strings.Join(opts.AppNamespaces, ",") + "}",
		"--set", "gate.image.repository=" + nodeImagePrefix + "zerowake-gate",
		"--set", "gate.image.tag=" + NodeImageVersion,
		"--set", "gate.image.pullPolicy=Never",
		"--set", "gate.nodeSelector.kubernetes\\.io/hostname=" + node,
		// The proxy runs on the node, not as a pod a policy could name, and nothing on this
		// node enforces NetworkPolicy.
		"--set", "gate.networkPolicy.enabled=false",
	}
	for _, s := range opts.Set {
		args = append(args, "--set", s)
	}
	cmd := exec.CommandContext(ctx, helm, args...)
	// helm keeps caches and repository lists under these; none is needed for a local chart.
	home := filepath.Join(c.Dir(), "helm")
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	if out, err := cmd.CombinedOutput(); err != nil {
		pods, _ := c.Kubectl(ctx, "get", "pods", "-n", ReleaseNamespace, "-o", "wide")
		logs, _ := c.Kubectl(ctx, "logs", "-n", ReleaseNamespace, "-l", "app.kubernetes.io/name in ("+ControllerName+","+GateName+")",
			"--prefix", "--tail=3")
		return fmt.Errorf("helm install: %v\n%s\n%s\n%s", err, out, pods, logs)
	}
	return nil
}

// AppOptions describe a test app Deployment.
type AppOptions struct {
	Namespace, Name string
	// StartDelay is how long the app takes to become ready (hack/testapp's START_DELAY).
	StartDelay time.Duration
	// MaxReplicas, if above 1, is the zerowake.dev/max-replicas annotation.
	MaxReplicas int
	// IdleAfter, if set, is the zerowake.dev/idle-after annotation: the app sleeps when idle.
	IdleAfter time.Duration
}

// AppObjects returns hack/testapp as a Deployment at zero replicas on the real node, opted in
// to waking (zerowake.dev/wake=true), with a readiness probe every second, and its Service
// (port 80 to the app's port).
func AppObjects(node string, o AppOptions) (*appsv1.Deployment, *corev1.Service) {
	labels := map[string]string{"app": o.Name}
	annotations := map[string]string{}
	if o.MaxReplicas > 1 {
		annotations["zerowake.dev/max-replicas"] = fmt.Sprint(o.MaxReplicas)
	}
	if o.IdleAfter > 0 {
		annotations["zerowake.dev/idle-after"] = o.IdleAfter.String()
	}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: o.Name, Labels: map[string]string{"zerowake.dev/wake": "true"}, Annotations: annotations},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(0)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{"kubernetes.io/hostname": node},
					// The app stops within a second of SIGTERM; scale-downs between cold
					// starts need not wait for the default 30s.
					TerminationGracePeriodSeconds: new(int64(2)),
					Containers: []corev1.Container{{
						Name:            "app",
						Image:           NodeImageRef("testapp"),
						ImagePullPolicy: corev1.PullNever,
						Env:             []corev1.EnvVar{{Name: "START_DELAY", Value: o.StartDelay.String()}},
						Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: AppPort}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("http")}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: o.Name},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}
	return d, s
}

// CreateApp creates AppObjects.
func CreateApp(ctx context.Context, c *localcluster.Cluster, o AppOptions) error {
	d, s := AppObjects(c.Node().Name(), o)
	if _, err := c.Client().AppsV1().Deployments(o.Namespace).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return err
	}
	_, err := c.Client().CoreV1().Services(o.Namespace).Create(ctx, s, metav1.CreateOptions{})
	return err
}

// AppRoute is the ingress route to an app: Host NAME.NAMESPACE.test, through the gate.
func AppRoute(o AppOptions, timeout time.Duration) IngressRoute {
	return IngressRoute{Host: o.Name + "." + o.Namespace + ".test", Namespace: o.Namespace, Service: o.Name, Port: AppPort,
		Target: o.Namespace + "/deployment/" + o.Name, Timeout: timeout}
}

// GateOfInstall is the gate InstallChart installs, for IngressProxyOptions.
func GateOfInstall(token string) IngressGate {
	return IngressGate{Namespace: ReleaseNamespace, Service: GateName, Port: GatePort, Token: token}
}

// StartNodeIngress starts, on c's real node, the proxy the chart's users put in front of their
// apps: a directory with a short path (unix socket paths are limited), the endpoint resolver on a
// socket in it, and Caddy with routes and forward_auth to the install's gate, which proxies
// authenticate to with token. stop stops both and removes the directory.
func StartNodeIngress(ctx context.Context, c *localcluster.Cluster, token string, routes []IngressRoute) (proxy *IngressProxy, resolver *EndpointResolver, stop func(), err error) {
	dir, err := os.MkdirTemp("", "zw-ingress-")
	if err != nil {
		return nil, nil, nil, err
	}
	fail := func(err error) (*IngressProxy, *EndpointResolver, func(), error) {
		if resolver != nil {
			resolver.Stop()
		}
		os.RemoveAll(dir)
		return nil, nil, nil, err
	}
	if resolver, err = StartEndpointResolver(ctx, c.Client(), filepath.Join(dir, "dns.sock")); err != nil {
		return fail(err)
	}
	caddy, err := CaddyPath(ctx)
	if err != nil {
		return fail(err)
	}
	proxy, err = StartIngressProxy(ctx, IngressProxyOptions{
		Caddy: caddy, Dir: dir, Resolver: resolver, Run: c.Node(), Gate: GateOfInstall(token), Routes: routes,
	})
	if err != nil {
		return fail(err)
	}
	return proxy, resolver, func() {
		proxy.Stop()
		resolver.Stop()
		os.RemoveAll(dir)
	}, nil
}
