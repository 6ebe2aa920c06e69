// Package localcluster runs a throwaway Kubernetes control plane on the loopback interface for
// integration tests and local development: etcd, kube-apiserver (RBAC enforced, client
// certificates, service account tokens), kube-controller-manager, kube-scheduler, and kwok
// simulating nodes and pod lifecycles, so that pods of a Deployment become Ready without a
// container runtime.
//
// Binaries come from hack/tools.sh, which builds and caches them; Start runs it first. Every
// component logs to DIR/logs/NAME.log; Start's progress goes to Options.Log.
package localcluster

import (
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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Options configure Start. The zero value is a cluster in a temporary directory that Stop removes.
type Options struct {
	// Dir holds the cluster's state: certificates, kubeconfigs, etcd data and logs. Empty
	// means a fresh temporary directory. Start clears what a previous cluster left there and
	// refuses if that cluster is still running.
	Dir string
	// Log receives progress lines and the output of hack/tools.sh; nil means os.Stderr.
	Log io.Writer
	// Detach starts the components in their own sessions so that they outlive this process;
	// stop them with Down(Dir). Requires Dir.
	Detach bool
	// Nodes is the number of kwok nodes to create; 0 means 1. Each can hold 10000 pods.
	Nodes int
	// Timeout bounds the wait for the started components to become ready (not the building
	// of binaries); 0 means 60s.
	Timeout time.Duration
	// AuditPolicy, if set, is a kube-apiserver audit policy (audit.k8s.io/v1 Policy, YAML);
	// the apiserver then writes audit events as JSON lines to AuditLog(), so that tests can
	// tell which identity made which request. Empty means no auditing.
	AuditPolicy []byte
	// RealNode also starts one real node (containerd, runc, CNI, kubelet, kube-proxy) beside
	// kwok's, and runs the whole cluster inside a network namespace of its own; see Node.
	// NodeRequirements tells whether this host can.
	RealNode bool
}

// Cluster is a running control plane.
type Cluster struct {
	dir     string
	tempDir bool
	log     io.Writer
	detach  bool
	bin     *binaries
	ca      []byte
	server  string
	// auditPolicy is Options.AuditPolicy.
	auditPolicy []byte
	// node is the real node, nil without Options.RealNode; the whole cluster then runs in
	// its network namespace.
	node    *Node
	nodeBin *nodeBinaries
	// host is the address the components listen on: loopback, or with a real node the
	// namespace's end of its veth pair.
	host string

	kubeconfig string
	restConfig *rest.Config
	client     kubernetes.Interface

	mu        sync.Mutex // guards procs and stopped
	procs     []*process // in start order
	stopped   bool
	restartMu sync.Mutex // serializes RestartAPIServer

	stopOnce sync.Once
	stopErr  error
	keepDir  atomic.Bool
}

const (
	apiserverName         = "kube-apiserver"
	etcdName              = "etcd"
	controllerManagerName = "kube-controller-manager"
	schedulerName         = "kube-scheduler"
	kwokName              = "kwok"

	tempDirPrefix = "zerowake-localcluster-"
	stateFile     = "state.json"
	// serviceCIDR holds the Services' addresses; only the real node's pods reach them.
	serviceCIDR = "10.96.0.0/16"
	// kwokNodeAnnotation marks the nodes kwok simulates.
	kwokNodeAnnotation = "kwok.x-k8s.io/node"
	podCIDR            = "10.128.0.0/9"
)

// owned lists what a cluster creates in its directory, apart from logs, so that a new cluster
// or Down can clear it without touching anything else a user keeps there.
var owned = []string{stateFile, "etcd", "pki", "config", "kubeconfig", "kubectl-cache", "node"}

// Start builds missing binaries, starts a control plane and waits until it can run pods.
// On error nothing is left running; the directory is kept so that its logs can be read.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	begin := time.Now()
	log := opts.Log
	if log == nil {
		log = os.Stderr
	}
	if opts.Detach && opts.Dir == "" {
		return nil, errors.New("localcluster: Detach needs a Dir to record the cluster in")
	}
	if opts.Nodes <= 0 {
		opts.Nodes = 1
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 60 * time.Second
	}

	root, err := RepoRoot()
	if err != nil {
		return nil, fmt.Errorf("localcluster: %w", err)
	}
	if opts.RealNode {
		if err := NodeRequirements(); err != nil {
			return nil, fmt.Errorf("localcluster: %w", err)
		}
	}
	bin, nodeBin, err := ensureBinaries(root, log, opts.RealNode)
	if err != nil {
		return nil, fmt.Errorf("localcluster: %w", err)
	}
	toolsTime := time.Since(begin)

	c := &Cluster{log: log, detach: opts.Detach, bin: bin, nodeBin: nodeBin, auditPolicy: opts.AuditPolicy, host: "127.0.0.1"}
	if err := c.prepareDir(opts.Dir); err != nil {
		return nil, fmt.Errorf("localcluster: %w", err)
	}
	defer func() {
		if err != nil {
			c.keepDir.Store(true)
			if stopErr := c.Stop(); stopErr != nil {
				err = errors.Join(err, stopErr)
			}
			err = fmt.Errorf("localcluster: %w\n(component logs are in %s)", err, c.path("logs"))
		}
	}()

	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	if opts.RealNode {
		ns, err := newNetns(ctx)
		if err != nil {
			return nil, err
		}
		c.node = &Node{c: c, name: nodeName, ns: ns, socket: c.nodePath("containerd.sock"),
			cgroupParent: cgroupParentFor(ns)}
		c.host = ns.nsIP.String()
		// Recorded so that a later Start can clean up after a cluster whose process was killed.
		if err := os.MkdirAll(c.nodePath(), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(c.nodePath(netnsFile), []byte(ns.name+"\n"), 0o644); err != nil {
			return nil, err
		}
		c.logf("network namespace %s, apiserver at %s", ns.path(), c.host)
	}
	if err := c.start(ctx, opts.Nodes); err != nil {
		return nil, err
	}
	c.logf("control plane ready in %s (binaries checked in %s) — dir %s",
		round(time.Since(begin)-toolsTime), round(toolsTime), c.dir)
	return c, nil
}

func (c *Cluster) prepareDir(dir string) error {
	if dir == "" {
		sweepTempDirs()
		d, err := os.MkdirTemp("", tempDirPrefix)
		if err != nil {
			return err
		}
		c.dir, c.tempDir = d, true
		return writeOwner(d)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	c.dir = dir
	if st, err := readState(dir); err == nil {
		if alive := st.running(); len(alive) > 0 {
			return fmt.Errorf("a cluster is already running in %s (%s); stop it first (localcluster down --dir %s)",
				dir, strings.Join(alive, ", "), dir)
		}
	}
	// What a real node left (mounts above all) goes before any file is removed.
	if err := sweepNode(dir); err != nil {
		return fmt.Errorf("cleaning up after the real node of a previous cluster in %s: %w", dir, err)
	}
	for _, name := range append(slices.Clone(owned), "logs") {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return os.MkdirAll(dir, 0o755)
}

type ports struct {
	etcdClient, etcdPeer, apiserver, controllerManager, scheduler int
}

func (c *Cluster) start(ctx context.Context, nodes int) error {
	var p ports
	free, err := freePorts(5)
	if err != nil {
		return err
	}
	p.etcdClient, p.etcdPeer, p.apiserver, p.controllerManager, p.scheduler = free[0], free[1], free[2], free[3], free[4]
	c.server = "https://" + net.JoinHostPort(c.host, strconv.Itoa(p.apiserver))

	if err := os.MkdirAll(c.path("logs"), 0o755); err != nil {
		return err
	}
	if err := c.writeConfig(p); err != nil {
		return err
	}

	// The apiserver retries etcd until it answers, so both start at once.
	t := time.Now()
	etcd := c.newProcess(etcdName, c.bin.etcd, c.etcdArgs(p))
	apiserver := c.newProcess(apiserverName, c.bin.apiserver, c.apiserverArgs(p))
	for _, proc := range []*process{etcd, apiserver} {
		if err := c.startProcess(proc); err != nil {
			return err
		}
	}
	etcdURL := "http://" + net.JoinHostPort(c.host, strconv.Itoa(p.etcdClient)) + "/health"
	if err := c.await(ctx, "etcd health", etcd, func(ctx context.Context) error { return httpOK(ctx, http.DefaultClient, etcdURL) }); err != nil {
		return err
	}
	if err := c.await(ctx, "kube-apiserver /readyz", apiserver, c.apiserverReady); err != nil {
		return err
	}
	c.logf("etcd and kube-apiserver ready in %s", round(time.Since(t)))

	t = time.Now()
	// The controller manager gives up if the apiserver is not healthy within seconds, so its
	// clients start only now.
	kcm := c.newProcess(controllerManagerName, c.bin.controllerManager, c.controllerManagerArgs(p))
	scheduler := c.newProcess(schedulerName, c.bin.scheduler, c.schedulerArgs(p))
	kwok := c.newProcess(kwokName, c.bin.kwok, c.kwokArgs())
	for _, proc := range []*process{kcm, scheduler, kwok} {
		if err := c.startProcess(proc); err != nil {
			return err
		}
	}
	if err := c.createNodes(ctx, nodes); err != nil {
		return err
	}

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.ca)
	https := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer https.CloseIdleConnections()
	checks := []struct {
		what  string
		blame *process
		check func(context.Context) error
	}{
		{"kube-controller-manager /healthz", kcm, func(ctx context.Context) error {
			return httpOK(ctx, https, "https://"+net.JoinHostPort(c.host, strconv.Itoa(p.controllerManager))+"/healthz")
		}},
		{"kube-scheduler /healthz", scheduler, func(ctx context.Context) error {
			return httpOK(ctx, https, "https://"+net.JoinHostPort(c.host, strconv.Itoa(p.scheduler))+"/healthz")
		}},
		{"the default ServiceAccount (created by kube-controller-manager)", kcm, func(ctx context.Context) error {
			_, err := c.client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
			return err
		}},
		{"nodes Ready and untainted (kwok, kube-controller-manager)", kwok, func(ctx context.Context) error {
			return c.nodesReady(ctx, nodes)
		}},
	}
	for _, ch := range checks {
		if err := c.await(ctx, ch.what, ch.blame, ch.check); err != nil {
			return err
		}
	}
	c.logf("controllers, scheduler and %d kwok node(s) ready in %s", nodes, round(time.Since(t)))

	// Each part answers; now check that together they run a pod, which costs a fraction of
	// a second and turns a broken plane into an error here rather than puzzling test failures.
	t = time.Now()
	if err := c.smokeTest(ctx, kcm, scheduler, kwok); err != nil {
		return err
	}
	c.logf("smoke test: a Deployment became ready in %s", round(time.Since(t)))
	if c.node != nil {
		return c.startNode(ctx)
	}
	return nil
}

// stuckError names the component that a failed readiness check points at.
type stuckError struct {
	blame *process
	err   error
}

func (e *stuckError) Error() string { return e.err.Error() }

func (c *Cluster) smokeTest(ctx context.Context, kcm, scheduler, kwok *process) error {
	const ns, name = metav1.NamespaceSystem, "localcluster-smoke"
	labels := map[string]string{"app": name}
	deploy := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					// A kwok node: the image exists nowhere.
					NodeSelector: map[string]string{"type": "kwok"},
					Containers:   []corev1.Container{{Name: "smoke", Image: "localcluster.invalid/smoke"}},
				},
			},
		},
	}
	deployments := c.client.AppsV1().Deployments(ns)
	if _, err := deployments.Create(ctx, deploy, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("smoke test: %w", err)
	}
	err := c.await(ctx, "a smoke-test Deployment in kube-system to become ready", kcm, func(ctx context.Context) error {
		d, err := deployments.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.ReadyReplicas > 0 {
			return nil
		}
		pods, err := c.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return err
		}
		switch {
		case len(pods.Items) == 0:
			return &stuckError{kcm, errors.New("no pod created")}
		case pods.Items[0].Spec.NodeName == "":
			return &stuckError{scheduler, fmt.Errorf("pod %s not scheduled", pods.Items[0].Name)}
		default:
			return &stuckError{kwok, fmt.Errorf("pod %s on %s not ready: %s", pods.Items[0].Name, pods.Items[0].Spec.NodeName, pods.Items[0].Status.Phase)}
		}
	})
	if err != nil {
		return err
	}
	// Nobody waits for the pod to go: tests do not look into kube-system.
	return deployments.Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: new(metav1.DeletePropagationBackground)})
}

func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.dir}, elem...)...)
}

func (c *Cluster) logf(format string, args ...any) {
	fmt.Fprintf(c.log, "localcluster: "+format+"\n", args...)
}

func (c *Cluster) newProcess(name, path string, args []string) *process {
	p := &process{name: name, path: path, args: args, logPath: c.path("logs", name+".log")}
	if c.node != nil {
		p.netns = c.node.ns.path()
	}
	return p
}

func (c *Cluster) startProcess(p *process) error {
	if err := p.start(c.detach); err != nil {
		return err
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	err := c.saveStateLocked()
	c.mu.Unlock()
	return err
}

// await polls check until it succeeds, ctx ends or a component exits. Errors name the
// component to blame and carry the end of its log, since that is where the cause is.
func (c *Cluster) await(ctx context.Context, what string, blame *process, check func(context.Context) error) error {
	const interval = 50 * time.Millisecond
	for {
		c.mu.Lock()
		procs := slices.Clone(c.procs)
		c.mu.Unlock()
		for _, p := range procs {
			if done, why := p.exited(); done {
				return fmt.Errorf("%s exited (%v) while waiting for %s; last lines of %s:\n%s",
					p.name, why, what, p.logPath, p.tail(30))
			}
		}
		checkCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := check(checkCtx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			var s *stuckError
			if errors.As(err, &s) {
				blame = s.blame
			}
			return fmt.Errorf("timed out waiting for %s: %v; last lines of %s:\n%s",
				what, err, blame.logPath, blame.tail(30))
		case <-time.After(interval):
		}
	}
}

func (c *Cluster) apiserverReady(ctx context.Context) error {
	_, err := c.client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	return err
}

func httpOK(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

func (c *Cluster) createNodes(ctx context.Context, n int) error {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("1000"),
		corev1.ResourceMemory: resource.MustParse("1Ti"),
		corev1.ResourcePods:   resource.MustParse("10000"),
	}
	for i := range n {
		name := fmt.Sprintf("kwok-node-%d", i)
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name: name,
				Labels: map[string]string{
					"kubernetes.io/hostname": name,
					"kubernetes.io/os":       "linux",
					"kubernetes.io/arch":     "amd64",
					"type":                   "kwok",
				},
				Annotations: map[string]string{
					kwokNodeAnnotation:             "fake",
					"node.alpha.kubernetes.io/ttl": "0",
				},
			},
			Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
		}
		if _, err := c.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating node %s: %w", name, err)
		}
	}
	return nil
}

func (c *Cluster) nodesReady(ctx context.Context, want int) error {
	nodes, err := c.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "type=kwok"})
	if err != nil {
		return err
	}
	ready := 0
	for _, node := range nodes.Items {
		if len(node.Spec.Taints) > 0 {
			return fmt.Errorf("node %s has taints %v", node.Name, node.Spec.Taints)
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				ready++
			}
		}
	}
	if ready < want {
		return fmt.Errorf("%d of %d nodes Ready", ready, want)
	}
	return nil
}

// freePorts reserves n distinct loopback ports. All listeners stay open until every port is
// chosen so that the kernel cannot hand out the same port twice.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Dir returns the cluster's state directory; component logs are in its logs/ subdirectory.
func (c *Cluster) Dir() string { return c.dir }

// LogFile returns the log of a component: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler or kwok.
func (c *Cluster) LogFile(component string) string { return c.path("logs", component+".log") }

// AuditLog returns the path of the apiserver's audit log (JSON lines, one audit.k8s.io/v1
// Event each), or "" unless Options.AuditPolicy was set.
func (c *Cluster) AuditLog() string {
	if len(c.auditPolicy) == 0 {
		return ""
	}
	return c.path("logs", "audit.log")
}

// Kubeconfig returns the path of a kubeconfig for an administrator (group system:masters).
func (c *Cluster) Kubeconfig() string { return c.kubeconfig }

// Server returns the apiserver's URL.
func (c *Cluster) Server() string { return c.server }

// CAData returns the PEM-encoded CA that signed the apiserver's serving certificate.
func (c *Cluster) CAData() []byte { return c.ca }

// RESTConfig returns a fresh copy of the administrator's client configuration, with client-side
// rate limits raised well above client-go's defaults.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.restConfig) }

// Client returns an administrator's clientset.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// TokenConfig returns a client configuration that authenticates with a bearer token only,
// e.g. a ServiceAccount's from TokenRequest, so that requests are subject to its RBAC.
func (c *Cluster) TokenConfig(token string) *rest.Config {
	return &rest.Config{
		Host:            c.server,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.ca},
		QPS:             c.restConfig.QPS,
		Burst:           c.restConfig.Burst,
	}
}

// ServiceAccountConfig mints a token for the ServiceAccount namespace/name through the
// TokenRequest API and returns a client configuration that uses it.
func (c *Cluster) ServiceAccountConfig(ctx context.Context, namespace, name string) (*rest.Config, error) {
	tr, err := c.client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("minting a token for %s/%s: %w", namespace, name, err)
	}
	return c.TokenConfig(tr.Status.Token), nil
}

// KubectlPath returns the path of the kubectl built for the cluster's Kubernetes version.
func (c *Cluster) KubectlPath() string { return c.bin.kubectl }

// Kubectl runs kubectl as the administrator and returns its standard output; the error
// carries its standard error.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	var stdout, stderr strings.Builder
	// A private discovery cache: the default one in ~/.kube grows by a directory per random port.
	global := []string{"--kubeconfig=" + c.kubeconfig, "--cache-dir=" + c.path("kubectl-cache")}
	cmd := exec.CommandContext(ctx, c.bin.kubectl, append(global, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// RestartAPIServer stops kube-apiserver (SIGTERM, SIGKILL after a timeout) and starts it again
// on the same address, returning once it is ready. The other components reconnect by themselves.
func (c *Cluster) RestartAPIServer(ctx context.Context) error {
	c.restartMu.Lock()
	defer c.restartMu.Unlock()
	// c.mu is not held while waiting, so that Stop, e.g. on Ctrl-C, need not wait for a restart.
	c.mu.Lock()
	i := slicesIndex(c.procs, apiserverName)
	stopped := c.stopped
	var old *process
	if i >= 0 {
		old = c.procs[i]
	}
	c.mu.Unlock()
	if stopped || old == nil {
		return errors.New("localcluster: the cluster is stopped")
	}
	t := time.Now()
	if err := old.stop(stopTimeout); err != nil {
		return fmt.Errorf("localcluster: %w", err)
	}
	p := c.newProcess(old.name, old.path, old.args)
	p.env = old.env
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return errors.New("localcluster: the cluster was stopped during the restart")
	}
	err := p.start(c.detach)
	if err == nil {
		c.procs[i] = p
		err = c.saveStateLocked()
	}
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("localcluster: %w", err)
	}
	if err := c.await(ctx, "the restarted kube-apiserver's /readyz", p, c.apiserverReady); err != nil {
		return fmt.Errorf("localcluster: %w", err)
	}
	c.logf("kube-apiserver restarted in %s", round(time.Since(t)))
	return nil
}

func slicesIndex(procs []*process, name string) int {
	for i, p := range procs {
		if p.name == name {
			return i
		}
	}
	return -1
}

// Stop stops every component, clients first and etcd last, each with SIGTERM and then SIGKILL
// after a timeout. It is idempotent and safe to call concurrently, e.g. from a signal handler;
// later calls wait for the first and return its result. A temporary directory is removed
// unless a test failed (see Main) or LOCALCLUSTER_KEEP is set.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		c.mu.Lock()
		c.stopped = true
		procs := slices.Clone(c.procs)
		c.mu.Unlock()
		names := make([]string, len(procs))
		for i, p := range procs {
			names[i] = p.name
		}
		if c.node != nil {
			c.stopErr = c.stopNode(procs)
		}
		c.stopErr = errors.Join(c.stopErr, stopOrdered(names, func(i int) error { return procs[i].stop(stopTimeout) }))
		if c.node != nil {
			// A last sweep: nothing may keep the namespace in use once it is deleted.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			c.stopErr = errors.Join(c.stopErr, killInNetns(c.node.ns), unmountUnder(c.dir), c.node.ns.delete(ctx))
			cancel()
		}
		if c.stopErr != nil {
			c.keepDir.Store(true)
		}
		var err error
		switch {
		case !c.tempDir:
			err = removeOwned(c.dir)
		case c.keepDir.Load() || os.Getenv("LOCALCLUSTER_KEEP") != "":
			err = markKept(c.dir)
			c.logf("kept %s", c.dir)
		default:
			err = os.RemoveAll(c.dir)
		}
		c.stopErr = errors.Join(c.stopErr, err)
	})
	return c.stopErr
}

// stopOrdered stops components in reverse start order, except that the apiserver's clients,
// which do not depend on each other, stop together to keep Stop short.
func stopOrdered(names []string, stop func(i int) error) error {
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		if name != etcdName && name != apiserverName {
			wg.Go(func() { errs[i] = stop(i) })
		}
	}
	wg.Wait()
	for i := len(names) - 1; i >= 0; i-- {
		if names[i] == etcdName || names[i] == apiserverName {
			errs[i] = stop(i)
		}
	}
	return errors.Join(errs...)
}

func round(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }
