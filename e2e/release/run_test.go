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

// TestImageRunsController unpacks the linux/amd64 image's filesystem and runs its entrypoint
// the way the release's Deployment runs it in a pod, as far as this machine allows: with the
// Deployment's arguments and environment, in-cluster configuration from a mounted
// ServiceAccount token of the controller's ServiceAccount, and, when the test runs as root,
// chrooted into the image's filesystem (with /proc mounted, as a container runtime does) as
// the image's non-root user. A wake then has to succeed through it, and its /metrics feeds
// the monitoring check.
func TestImageRunsController(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skipf("this test runs the linux/amd64 image, and this machine is %s", runtime.GOARCH)
	}
	ctx := testContext(t)
	layout := filepath.Join(bundle, "image", "oci")
	_, images := readLayout(t, layout)
	var img platformImage
	for _, i := range images {
		if i.platform.Architecture == "amd64" {
			img = i
		}
	}
	rootfs := filepath.Join(cluster.Dir(), "rootfs-amd64")
	unpack(t, layout, img, rootfs)
	entrypoint := img.config.Config.Entrypoint
	binary := filepath.Join(rootfs, entrypoint[0])

	out, err := run(ctx, rootfs, nil, binary, "--version")
	if err != nil || strings.TrimSpace(out) != "zerowake-controller "+version {
		t.Fatalf("%s --version: %q, %v", entrypoint[0], out, err)
	}

	deployment := releaseDeployment(t)
	container := deployment.Spec.Template.Spec.Containers[0]
	if container.Image != imageName+"@"+digest {
		t.Fatalf("release Deployment runs %s, want %s@%s", container.Image, imageName, digest)
	}
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ops := "127.0.0.1:" + strconv.Itoa(port)
	var args []string
	for _, a := range container.Args {
		if strings.HasPrefix(a, "--ops-address=") {
			a = "--ops-address=" + ops // the pod's :8080 may be taken on this machine
		}
		args = append(args, a)
	}

	// What the kubelet mounts and sets for the pod.
	config, err := cluster.ServiceAccountConfig(ctx, deployment.Namespace, deployment.Spec.Template.Spec.ServiceAccountName)
	if err != nil {
		t.Fatal(err)
	}
	server, err := url.Parse(cluster.Server())
	if err != nil {
		t.Fatal(err)
	}
	secrets := filepath.Join(rootfs, "var", "run", "secrets", "kubernetes.io", "serviceaccount")
	if err := os.MkdirAll(secrets, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"token": []byte(config.BearerToken), "ca.crt": cluster.CAData(), "namespace": []byte(deployment.Namespace),
	} {
		if err := os.WriteFile(filepath.Join(secrets, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := append([]string{}, img.config.Config.Env...)
	env = append(env, "KUBERNETES_SERVICE_HOST="+server.Hostname(), "KUBERNETES_SERVICE_PORT="+server.Port(),
		"POD_NAMESPACE="+deployment.Namespace)

	logPath := filepath.Join(cluster.Dir(), "image-controller.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(binary, args...)
	cmd.Env, cmd.Dir = env, "/"
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() == 0 {
		uid, gid := imageUser(t, img.config.Config.User)
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
		t.Logf("not root: running %s without chroot, as the current user, with the pod's kubeconfig-less in-cluster settings replaced by --kubeconfig", entrypoint[0])
		kubeconfig := filepath.Join(cluster.Dir(), "image-controller.kubeconfig")
		if err := framework.WriteKubeconfig(kubeconfig, config); err != nil {
			t.Fatal(err)
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
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	logTail := func() string { data, _ := os.ReadFile(logPath); return string(data) }
	waitHTTP(t, ctx, exited, "http://"+ops+"/readyz", logTail)
	if cmd.SysProcAttr.Chroot != "" {
		// The process really is confined as a pod's would be: the image as its root, its user.
		if got, err := os.Readlink(fmt.Sprintf("/proc/%d/root", cmd.Process.Pid)); err != nil || got != rootfs {
			t.Errorf("controller's root is %q (%v), want %s", got, err, rootfs)
		}
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		for _, line := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(line, "Uid:") && strings.Fields(line)[1] != "65532" {
				t.Errorf("controller runs as %s, want uid 65532", line)
			}
		}
	}

	if first, _, _ := strings.Cut(logTail(), "\n"); !strings.Contains(first, `"version":"`+version+`"`) {
		t.Errorf("startup log line does not carry the version %s: %s", version, first)
	}

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
			t.Fatalf("ScaleRequest not Ready within 60s: %s; err %v\ncontroller log:\n%s", framework.DescribeStatus(got), err, logTail())
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
			t.Fatalf("the image's controller exited:\n%s", logTail())
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not OK within 60s:\n%s", url, logTail())
		}
	}
}

// releaseDeployment returns the controller Deployment as the bundle's zerowake.yaml has it.
func releaseDeployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	f, err := os.Open(filepath.Join(bundle, "zerowake.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewYAMLOrJSONDecoder(f, 4096)
	for {
		var d appsv1.Deployment
		if err := dec.Decode(&d); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if d.Kind == "Deployment" {
			return &d
		}
	}
	t.Fatal("no Deployment in zerowake.yaml")
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
