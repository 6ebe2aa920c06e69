package localcluster_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/zerowake/zerowake/hack/localcluster"
)

// TestRealNode runs a real container: a cluster with a real node, the testapp image imported,
// a Deployment with a readiness probe, and a request to the pod's own address. Then it checks
// that Stop leaves nothing behind. ZEROWAKE_SKIP_NODE=1 skips it; a host that cannot run a
// node fails it, with the reason.
func TestRealNode(t *testing.T) {
	if os.Getenv("ZEROWAKE_SKIP_NODE") == "1" {
		t.Skip("ZEROWAKE_SKIP_NODE=1")
	}
	if err := localcluster.NodeRequirements(); err != nil {
		t.Fatalf("%v (set ZEROWAKE_SKIP_NODE=1 to skip the real-node tests)", err)
	}
	root, err := localcluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	images := t.TempDir()
	// Two platforms, as the project's own images have: ImportImage must pick linux/amd64.
	build := exec.Command("go", "run", ".", "-root", root, "-version", "test", "-out", images,
		"-images", "testapp", "-platforms", "linux/amd64,linux/arm64", "-source-date-epoch", "0")
	build.Dir = filepath.Join(root, "hack", "tools", "image")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the testapp image: %v\n%s", err, out)
	}

	// A bound for a hung run, not a measure: the node's tools are built before this point, and
	// Start, which waits at most its Timeout, takes seconds here.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := localcluster.Start(ctx, localcluster.Options{RealNode: true, Timeout: 3 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster with a real node up in %s", time.Since(start).Round(time.Millisecond))
	dir, netns := c.Dir(), c.Node().NetNS()
	stopped := false
	defer func() {
		if !stopped {
			_ = c.Stop()
		}
	}()

	node := c.Node()
	const ref = "zerowake.local/testapp:test"
	if err := node.ImportImage(ctx, filepath.Join(images, "testapp", "oci"), ref); err != nil {
		t.Fatal(err)
	}

	// Not NewNamespace: its cleanup would run after this test stops the cluster.
	nsObj, err := c.Client().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "realnode"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns := nsObj.Name
	labels := map[string]string{"app": "testapp"}
	deploy := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "testapp", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeName: node.Name(),
					Containers: []corev1.Container{{
						Name:            "testapp",
						Image:           ref,
						ImagePullPolicy: corev1.PullNever,
						Ports:           []corev1.ContainerPort{{ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(8080)}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
	client := c.Client()
	begin := time.Now()
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, deploy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	for {
		d, err := client.AppsV1().Deployments(ns).Get(ctx, "testapp", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if available(d) {
			break
		}
		if ctx.Err() != nil {
			pods, _ := client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
			t.Fatalf("the Deployment did not become Available: %+v\npods: %+v\nkubelet log: %s", d.Status, pods, c.LogFile("kubelet"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("Deployment 0 -> 1 Available in %s", time.Since(begin).Round(time.Millisecond))
	pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=testapp"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("listing the pod: %v, %d pods", err, len(pods.Items))
	}
	pod = pods.Items[0]

	httpClient := &http.Client{Transport: &http.Transport{DialContext: node.DialContext}, Timeout: 10 * time.Second}
	defer httpClient.CloseIdleConnections()
	body := get(t, httpClient, "http://"+net.JoinHostPort(pod.Status.PodIP, "8080")+"/")
	// The body names the pod: the application answered, not something else on that address.
	if want := "testapp " + pod.Name + "\n"; body != want {
		t.Errorf("GET / on the pod: %q, want %q", body, want)
	}
	// The same through a Service's ClusterIP, which kube-proxy translates.
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "testapp", Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	svc, err = client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + net.JoinHostPort(svc.Spec.ClusterIP, "80") + "/"
	for {
		// kube-proxy programs the Service moments after it exists; until then nothing answers.
		b, err := tryGet(ctx, httpClient, url)
		if err == nil {
			if want := "testapp " + pod.Name + "\n"; b != want {
				t.Errorf("GET / through the Service: %q, want %q", b, want)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("GET %s: %v (kube-proxy log: %s)", url, err, c.LogFile("kube-proxy"))
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Pods reach the apiserver through the kubernetes Service, as in-cluster clients do; its
	// certificate must name that address.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CAData())
	apiClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext:     node.DialContext,
		TLSClientConfig: &tls.Config{RootCAs: pool},
	}}
	defer apiClient.CloseIdleConnections()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://10.96.0.1:443/readyz", nil)
		resp, err := apiClient.Do(req)
		if err == nil {
			resp.Body.Close()
			// Anonymous requests may read /readyz (system:public-info-viewer).
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET /readyz through the kubernetes Service: %s", resp.Status)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the apiserver through the kubernetes Service: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The shims and the containers below them, which must be gone after Stop.
	running := clusterProcesses(t, dir)
	var shim, app bool
	for _, cmd := range running {
		shim = shim || strings.Contains(cmd, "containerd-shim-runc-v2")
		app = app || strings.TrimSpace(cmd) == "/testapp"
	}
	// Otherwise the checks after Stop would look for the wrong processes.
	if !shim || !app {
		t.Errorf("among the cluster's processes, found a shim: %v, the testapp container: %v; processes: %v", shim, app, running)
	}
	stopStart := time.Now()
	if err := c.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	stopped = true
	t.Logf("stopped in %s", time.Since(stopStart).Round(time.Millisecond))
	checkNothingLeft(t, dir, netns, running)
}

// clusterProcesses returns the command lines of the processes that name dir on their
// command line (containerd, shims, the kubelet: all name files in it) and of their
// descendants (the containers), by pid.
func clusterProcesses(t *testing.T, dir string) map[int]string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	parent := map[int]int{}
	cmdlines := map[int]string{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		stat, err2 := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil || err2 != nil {
			continue
		}
		cmdlines[pid] = string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 {
			if f := strings.Fields(string(stat[i+1:])); len(f) > 1 {
				parent[pid], _ = strconv.Atoi(f[1])
			}
		}
	}
	found := map[int]string{}
	for pid, cmd := range cmdlines {
		if strings.Contains(cmd, dir) {
			found[pid] = cmd
		}
	}
	for grew := true; grew; {
		grew = false
		for pid, ppid := range parent {
			if _, ok := found[ppid]; ok {
				if _, ok := found[pid]; !ok {
					found[pid], grew = cmdlines[pid], true
				}
			}
		}
	}
	return found
}

func available(d *appsv1.Deployment) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue && d.Status.AvailableReplicas > 0 {
			return true
		}
	}
	return false
}

func get(t *testing.T, client *http.Client, url string) string {
	t.Helper()
	body, err := tryGet(t.Context(), client, url)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func tryGet(ctx context.Context, client *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b), nil
}

// checkNothingLeft fails unless the cluster's namespace, its processes (shims and containers
// included) and every mount below its directory are gone.
func checkNothingLeft(t *testing.T, dir, netns string, before map[int]string) {
	t.Helper()
	if _, err := os.Stat(netns); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the network namespace %s is still there (%v)", netns, err)
	}
	// The namespace zw-ID has the veth zwh-ID on the host and the cgroup root localcluster-ID.
	id := strings.TrimPrefix(filepath.Base(netns), "zw-")
	if _, err := net.InterfaceByName("zwh-" + id); err == nil {
		t.Errorf("the host's end of the veth pair, zwh-%s, is still there", id)
	}
	if left, _ := filepath.Glob("/sys/fs/cgroup/*/localcluster-" + id); len(left) > 0 {
		t.Errorf("cgroups left: %v", left)
	}
	if left, _ := filepath.Glob("/sys/fs/cgroup/localcluster-" + id); len(left) > 0 {
		t.Errorf("cgroups left: %v", left)
	}
	links, _ := os.ReadDir("/var/log/containers")
	for _, l := range links {
		if target, err := os.Readlink(filepath.Join("/var/log/containers", l.Name())); err == nil && strings.HasPrefix(target, dir+"/") {
			t.Errorf("log link left: /var/log/containers/%s -> %s", l.Name(), target)
		}
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			t.Errorf("still mounted: %s", f[4])
		}
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		// Every process of the cluster names its directory or namespace on its command line;
		// a shim names containerd's socket, which is in the directory. A container is a pid
		// seen before Stop with the same command line.
		if bytes.Contains(cmdline, []byte(dir)) || bytes.Contains(cmdline, []byte(netns)) ||
			before[pid] != "" && before[pid] == string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})) {
			t.Errorf("process %d is still running: %s", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		}
	}
}
