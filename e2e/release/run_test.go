package release

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"

	"github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/e2e/framework"
	"github.com/zerowake/zerowake/hack/localcluster"
)

// TestImageRunsController runs the controller image's entrypoint as the release's Deployment
// would (runAsPod), checks that a wake succeeds through it, and feeds its /metrics to the
// monitoring check.
func TestImageRunsController(t *testing.T) {
	skipUnlessAMD64(t)
	ctx := testContext(t)
	deployment := releaseDeployment(t, "zerowake.yaml", "zerowake-controller")
	pod := runAsPod(t, ctx, controllerImage, deployment, "--ops-address")
	ops := pod.addresses["--ops-address"]

	// A wake through the image's controller.
	ns := localcluster.NewNamespace(t, cluster)
	createTarget(t, ctx, ns, "web")
	sr := &v1alpha1.ScaleRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: v1alpha1.ScaleRequestSpec{
			ScaleTargetRef: v1alpha1.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "web"},
			MinReplicas:    2,
			RequestedAt:    &metav1.MicroTime{Time: time.Now()},
		},
	}
	if _, err := client.ZerowakeV1alpha1().ScaleRequests(ns).Create(ctx, sr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, err := client.ZerowakeV1alpha1().ScaleRequests(ns).Get(ctx, "web", metav1.GetOptions{})
		if err == nil && got.Status.Phase == v1alpha1.PhaseReady && got.Status.ReadyReplicas >= 2 {
			t.Logf("woken through the image's controller: %s", framework.DescribeStatus(got))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ScaleRequest not Ready within 60s: %s; err %v\ncontroller log:\n%s", framework.DescribeStatus(got), err, pod.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}

	resp, err := http.Get("http://" + ops + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	scrape, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scraping /metrics: %d %v\n%s", resp.StatusCode, err, scrape)
	}
	t.Run("monitoring queries match /metrics", func(t *testing.T) {
		checkMonitoring(t, string(scrape), deployment)
	})
}

// TestImageRunsGate runs the gate image's entrypoint as the release's gate Deployment would,
// as its ServiceAccount with its token Secret mounted, and expects a call for an opted-in
// workload in the namespace it serves to become a ScaleRequest: what its RBAC must allow.
func TestImageRunsGate(t *testing.T) {
	skipUnlessAMD64(t)
	ctx := testContext(t)
	deployment := releaseDeployment(t, "zerowake-gate.yaml", "zerowake-gate")
	// deploy/gate serves the namespace "default" (its RoleBinding and --namespaces).
	checkGateWakes(t, ctx, deployment, "default")
}

// checkGateWakes runs the gate image as deployment's pod would and calls it for a new
// opted-in workload in served: the gate must read the workload's opt-in and create its
// ScaleRequest, with the rights deployment's ServiceAccount has.
func checkGateWakes(t *testing.T, ctx context.Context, deployment *appsv1.Deployment, served string) {
	t.Helper()
	pod := runAsPod(t, ctx, gateImage, deployment, "--ops-address", "--address")
	target := "gate-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	createTarget(t, ctx, served, target)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = kube.AppsV1().Deployments(served).Delete(ctx, target, metav1.DeleteOptions{})
		_ = client.ZerowakeV1alpha1().ScaleRequests(served).Delete(ctx, target, metav1.DeleteOptions{})
	})
	// No controller acts on this ScaleRequest, so the gate holds the call for the route's
	// timeout and answers 503: the wake is asked for, not yet done.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		"http://"+pod.addresses["--address"]+"/auth?target="+served+"/deployment/"+target+"&timeout=1s", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Zerowake-Token", gateToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("call for %s/%s: %d %s, want 503 (held for the route's 1s timeout, nothing scales it)\ngate log:\n%s",
			served, target, resp.StatusCode, body, pod.logTail())
	}
	sr, err := client.ZerowakeV1alpha1().ScaleRequests(served).Get(ctx, target, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the gate created no ScaleRequest for %s/%s: %v\ngate log:\n%s", served, target, err, pod.logTail())
	}
	if by := sr.Labels["app.kubernetes.io/managed-by"]; by != "zerowake-gate" {
		t.Errorf("ScaleRequest %s/%s is labelled managed-by %q, want zerowake-gate", served, target, by)
	}
}

func skipUnlessAMD64(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skipf("this test runs the linux/amd64 image, and this machine is %s", runtime.GOARCH)
	}
}

// pod is an image's entrypoint running as runAsPod started it.
type pod struct {
	// addresses are the loopback addresses given to the listening flags, by flag.
	addresses map[string]string
	logTail   func() string
}

// runAsPod unpacks img's linux/amd64 filesystem, checks that its entrypoint reports the
// release's version, and runs it the way deployment's first container runs in a pod, as far as
// this machine allows: with the container's arguments and environment, in-cluster
// configuration from a token of the pod's ServiceAccount, the Secrets the container mounts
// written where it mounts them, and, when the test runs as root, chrooted into the image's
// filesystem (with /proc mounted, as a container runtime does) as the image's non-root user.
// The flags named in listen get free loopback addresses instead of the pod's ports, which may
// be taken on this machine. It returns once /readyz answers OK; the process is stopped at the
// end of the test.
func runAsPod(t *testing.T, ctx context.Context, img *releasedImage, deployment *appsv1.Deployment, listen ...string) *pod {
	t.Helper()
	container := deployment.Spec.Template.Spec.Containers[0]
	if container.Image != img.ref() {
		t.Fatalf("Deployment %s/%s runs %s, want the image just built, %s", deployment.Namespace, deployment.Name, container.Image, img.ref())
	}
	layout := filepath.Join(img.dir(), "oci")
	_, images := readLayout(t, layout)
	var image platformImage
	for _, i := range images {
		if i.platform.Architecture == "amd64" {
			image = i
		}
	}
	rootfs := filepath.Join(cluster.Dir(), "rootfs-"+deployment.Namespace+"-"+deployment.Name)
	if err := os.RemoveAll(rootfs); err != nil {
		t.Fatal(err)
	}
	unpack(t, layout, image, rootfs)
	entrypoint := image.config.Config.Entrypoint
	binary := filepath.Join(rootfs, entrypoint[0])

	out, err := run(ctx, rootfs, nil, binary, "--version")
	if err != nil || strings.TrimSpace(out) != img.command+" "+version {
		t.Fatalf("%s --version: %q, %v; want %q", entrypoint[0], out, err, img.command+" "+version)
	}

	p := &pod{addresses: map[string]string{}}
	var args []string
	for _, a := range container.Args {
		for _, flag := range listen {
			if strings.HasPrefix(a, flag+"=") {
				port, err := framework.FreePort()
				if err != nil {
					t.Fatal(err)
				}
				p.addresses[flag] = "127.0.0.1:" + strconv.Itoa(port)
				a = flag + "=" + p.addresses[flag]
			}
		}
		args = append(args, a)
	}
	for _, flag := range listen {
		if p.addresses[flag] == "" {
			t.Fatalf("Deployment %s/%s has no %s argument", deployment.Namespace, deployment.Name, flag)
		}
	}

	// What the kubelet mounts and sets for the pod: the ServiceAccount's token, the Secret
	// volumes, the environment.
	config, err := cluster.ServiceAccountConfig(ctx, deployment.Namespace, deployment.Spec.Template.Spec.ServiceAccountName)
	if err != nil {
		t.Fatal(err)
	}
	server, err := url.Parse(cluster.Server())
	if err != nil {
		t.Fatal(err)
	}
	mounts := map[string]map[string][]byte{
		"/var/run/secrets/kubernetes.io/serviceaccount": {
			"token": []byte(config.BearerToken), "ca.crt": cluster.CAData(), "namespace": []byte(deployment.Namespace),
		},
	}
	for _, m := range container.VolumeMounts {
		for _, v := range deployment.Spec.Template.Spec.Volumes {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			secret, err := kube.CoreV1().Secrets(deployment.Namespace).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("the Secret the pod mounts at %s: %v", m.MountPath, err)
			}
			mounts[m.MountPath] = secret.Data
		}
	}
	for dir, files := range mounts {
		if err := os.MkdirAll(filepath.Join(rootfs, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(rootfs, dir, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	env := append([]string{}, image.config.Config.Env...)
	env = append(env, "KUBERNETES_SERVICE_HOST="+server.Hostname(), "KUBERNETES_SERVICE_PORT="+server.Port())
	for _, e := range container.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env = append(env, e.Name+"="+deployment.Namespace)
		default:
			t.Fatalf("environment variable %s: runAsPod knows only values and metadata.namespace", e.Name)
		}
	}

	logPath := filepath.Join(cluster.Dir(), "image-"+deployment.Namespace+"-"+deployment.Name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logFile.Close() })
	p.logTail = func() string { data, _ := os.ReadFile(logPath); return string(data) }
	cmd := exec.Command(binary, args...)
	cmd.Env, cmd.Dir = env, "/"
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() == 0 {
		uid, gid := imageUser(t, image.config.Config.User)
		procDir := filepath.Join(rootfs, "proc")
		if err := os.MkdirAll(procDir, 0o555); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("proc", procDir, "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
			t.Fatalf("mounting /proc in the image's filesystem: %v", err)
		}
		t.Cleanup(func() { _ = syscall.Unmount(procDir, syscall.MNT_DETACH) })
		cmd.Path, cmd.Args[0] = entrypoint[0], entrypoint[0]
		cmd.SysProcAttr.Chroot = rootfs
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: gid}
	} else {
		t.Logf("not root: running %s without chroot, as the current user, with --kubeconfig instead of in-cluster settings and mounted files read below the unpacked filesystem", entrypoint[0])
		kubeconfig := filepath.Join(cluster.Dir(), "image-"+deployment.Namespace+"-"+deployment.Name+".kubeconfig")
		if err := framework.WriteKubeconfig(kubeconfig, config); err != nil {
			t.Fatal(err)
		}
		for i, a := range cmd.Args[1:] {
			if flag, value, ok := strings.Cut(a, "="); ok {
				for dir := range mounts {
					if strings.HasPrefix(value, dir+"/") {
						cmd.Args[i+1] = flag + "=" + filepath.Join(rootfs, value)
					}
				}
			}
		}
		cmd.Args = append(cmd.Args, "--kubeconfig="+kubeconfig)
		cmd.Dir = rootfs
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(40 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	waitHTTP(t, ctx, exited, "http://"+p.addresses["--ops-address"]+"/readyz", p.logTail)
	if cmd.SysProcAttr.Chroot != "" {
		// The process really is confined as a pod's would be: the image as its root, its user.
		if got, err := os.Readlink(fmt.Sprintf("/proc/%d/root", cmd.Process.Pid)); err != nil || got != rootfs {
			t.Errorf("%s's root is %q (%v), want %s", img.command, got, err, rootfs)
		}
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		for _, line := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(line, "Uid:") && strings.Fields(line)[1] != "65532" {
				t.Errorf("%s runs as %s, want uid 65532", img.command, line)
			}
		}
	}
	if first, _, _ := strings.Cut(p.logTail(), "\n"); !strings.Contains(first, `"version":"`+version+`"`) {
		t.Errorf("%s's startup log line does not carry the version %s: %s", img.command, version, first)
	}
	return p
}

// unpack extracts an image's layers into dir, with their modes and, as root, their owners.
func unpack(t *testing.T, layout string, img platformImage, dir string) {
	t.Helper()
	for name, e := range layerFiles(t, layout, img) {
		if strings.Contains(name, "..") {
			t.Fatalf("layer path %q", name)
		}
		path := filepath.Join(dir, name)
		switch e.header.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, os.FileMode(e.header.Mode)&os.ModePerm); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, e.data, os.FileMode(e.header.Mode)&os.ModePerm); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected entry type %q for %s", e.header.Typeflag, name)
		}
		if os.Geteuid() == 0 {
			if err := os.Lchown(path, e.header.Uid, e.header.Gid); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func imageUser(t *testing.T, user string) (uint32, uint32) {
	t.Helper()
	u, g, _ := strings.Cut(user, ":")
	uid, err1 := strconv.ParseUint(u, 10, 32)
	gid, err2 := strconv.ParseUint(g, 10, 32)
	if err1 != nil || err2 != nil || uid == 0 {
		t.Fatalf("image user %q is not a numeric non-root uid:gid", user)
	}
	return uint32(uid), uint32(gid)
}

func waitHTTP(t *testing.T, ctx context.Context, exited <-chan struct{}, url string, logTail func() string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-exited:
			t.Fatalf("the image's entrypoint exited:\n%s", logTail())
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not OK within 60s:\n%s", url, logTail())
		}
	}
}

// releaseDeployment returns the Deployment name as the bundle's file has it.
func releaseDeployment(t *testing.T, file, name string) *appsv1.Deployment {
	t.Helper()
	f, err := os.Open(filepath.Join(bundle, file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return deploymentNamed(t, f, name)
}

// deploymentNamed decodes the Deployment name from a multi-document manifest.
func deploymentNamed(t *testing.T, manifest io.Reader, name string) *appsv1.Deployment {
	t.Helper()
	dec := yaml.NewYAMLOrJSONDecoder(manifest, 4096)
	for {
		var d appsv1.Deployment
		if err := dec.Decode(&d); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if d.Kind == "Deployment" && d.Name == name {
			return &d
		}
	}
	t.Fatalf("no Deployment %s in the manifest", name)
	return nil
}

// createTarget creates a Deployment at zero replicas whose pods kwok runs.
func createTarget(t *testing.T, ctx context.Context, ns, name string) {
	t.Helper()
	d := &appsv1.Deployment{
		// Marked by its owner as wakeable (the controller scales only such workloads), to two
		// replicas: the wake below asks for them.
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{v1alpha1.LabelWake: "true"},
			Annotations: map[string]string{v1alpha1.AnnotationMaxReplicas: "2"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](0),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: "registry.example/app:1",
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m")}},
				}}},
			},
		},
	}
	if _, err := kube.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(fmt.Errorf("creating the target: %w", err))
	}
}
