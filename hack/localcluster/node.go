package localcluster

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Node is the cluster's one real node: containerd, runc, the CNI bridge plugin, the kubelet
// and kube-proxy (nftables mode), running beside kwok's simulated nodes. Pods scheduled to it
// run real containers; select it with nodeName or the label kubernetes.io/hostname=Name(),
// since the scheduler may otherwise pick a kwok node. Images cannot be pulled (no registry is
// reachable): import them with ImportImage and use imagePullPolicy: Never.
//
// The whole cluster lives in a network namespace that Start creates and Stop deletes, joined
// to the host by a veth pair on a private /30; pod addresses (podSubnet) and Service
// addresses exist only inside it. Reach them with DialContext, or run a program inside with
// Command.
type Node struct {
	c    *Cluster
	name string
	ns   *netns
	// socket is containerd's gRPC socket.
	socket string
	// cgroupParent is the cgroup under which the kubelet puts every pod, in each hierarchy.
	cgroupParent string
}

const (
	nodeName = "localcluster-node"
	// podSubnet holds the real node's pod addresses. It lies outside kwok's podCIDR so that a
	// real pod's address never equals a simulated one.
	podSubnet = "10.64.0.0/24"
	// sandboxImage is the name the pause image is imported under and the CRI is told to use.
	sandboxImage = "localcluster.local/pause:" + "sandbox"

	containerdName = "containerd"
	kubeletName    = "kubelet"
	kubeProxyName  = "kube-proxy"
	nodeUser       = "system:node:" + nodeName
	nodesGroup     = "system:nodes"
	kubeProxyUser  = "system:kube-proxy"
)

// kubernetesServiceIP is the kubernetes Service's ClusterIP: the first address of serviceCIDR.
var kubernetesServiceIP = net.IPv4(10, 96, 0, 1)

// nodeBinaries are the executables of the real node.
type nodeBinaries struct {
	containerd, shim, ctr, crictl, runc, kubelet, kubeProxy, nft string
	cniDir                                                       string
	pauseLayout                                                  string
}

// Node returns the real node, or nil unless the cluster was started with Options.RealNode.
func (c *Cluster) Node() *Node { return c.node }

// Name returns the name of the node's Node object.
func (n *Node) Name() string { return n.name }

// IP returns the node's address, inside the cluster's network namespace, which is also where
// the apiserver listens.
func (n *Node) IP() net.IP { return n.ns.nsIP }

// NetNS returns the path of the cluster's network namespace (for nsenter --net=PATH).
func (n *Node) NetNS() string { return n.ns.path() }

// ImportImage imports the OCI layout in ociLayoutDir (as hack/tools/image writes it:
// OUT/NAME/oci) into the node's containerd as ref, e.g. "zerowake.local/testapp:dev", so that
// pods with imagePullPolicy: Never can run it. Only the linux/amd64 image of an index is
// imported.
func (n *Node) ImportImage(ctx context.Context, ociLayoutDir, ref string) error {
	if err := n.c.importImage(ctx, ociLayoutDir, ref); err != nil {
		return fmt.Errorf("localcluster: importing %s as %s: %w", ociLayoutDir, ref, err)
	}
	return nil
}

// DialContext connects from this process to an address inside the cluster's network
// namespace: a pod IP, a Service's ClusterIP, or a process started with Command. The address
// must be an IP literal. Use it as an http.Transport's DialContext.
func (n *Node) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return n.ns.dial(ctx, network, addr)
}

// Command returns a command that runs inside the cluster's network namespace. Like
// exec.CommandContext, it is killed when ctx ends.
func (n *Node) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	path, args := n.ns.wrap(name, args)
	return exec.CommandContext(ctx, path, args...)
}

// Requirements returns nil if this host can run a real node, or the reason it cannot.
func (n *Node) Requirements() error { return NodeRequirements() }

// NodeRequirements returns nil if this host can run a real node (Options.RealNode), or the
// reason it cannot. It needs no cluster, so tests can call it before starting one.
func NodeRequirements() error {
	var errs []error
	if os.Geteuid() != 0 {
		errs = append(errs, errors.New("not root: a real node creates a network namespace, mounts and cgroups"))
	}
	for _, tool := range []string{"ip", "nsenter", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			errs = append(errs, fmt.Errorf("%s is missing (iproute2, util-linux)", tool))
		}
	}
	if data, err := os.ReadFile("/proc/filesystems"); err != nil || !strings.Contains(string(data), "\toverlay\n") {
		errs = append(errs, errors.New("the kernel has no overlay filesystem (containerd's overlayfs snapshotter needs it)"))
	}
	if _, err := cgroupMounts(); err != nil {
		errs = append(errs, err)
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		errs = append(errs, errors.New("apt-get is missing: hack/tools.sh node takes libseccomp and nft from the Debian archive"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("this host cannot run a real node: %w", errors.Join(errs...))
	}
	return nil
}

// cgroupMounts returns the mount points of the cgroup hierarchies: the one cgroup2 mount on a
// v2 host, one per v1 controller (and the v2 "unified" one) on a v1 or hybrid host.
func cgroupMounts() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mounts []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		fields := strings.Fields(s.Text())
		sep := slices.Index(fields, "-")
		if sep < 0 || sep+1 >= len(fields) || len(fields) < 5 {
			continue
		}
		if fs := fields[sep+1]; fs == "cgroup" || fs == "cgroup2" {
			mounts = append(mounts, fields[4])
		}
	}
	if len(mounts) == 0 {
		return nil, errors.New("no cgroup filesystem is mounted")
	}
	return mounts, nil
}

// cgroupV2 reports whether the host runs cgroup v2 only (unified mode).
func cgroupV2() bool {
	var st syscall.Statfs_t
	const cgroup2Magic = 0x63677270
	return syscall.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == cgroup2Magic
}

func (c *Cluster) nodePath(elem ...string) string {
	return c.path(append([]string{"node"}, elem...)...)
}

// writeNodeConfig writes the configuration of containerd, the CNI plugins, the kubelet and
// kube-proxy, and their credentials.
func (c *Cluster) writeNodeConfig(ca *authority) error {
	n := c.node
	for _, d := range []string{"", "cni", "kubelet", "containerd"} {
		if err := os.MkdirAll(c.nodePath(d), 0o755); err != nil {
			return err
		}
	}
	for _, cl := range []struct{ file, user, group string }{
		{"kubelet.kubeconfig", nodeUser, nodesGroup},
		{"kube-proxy.kubeconfig", kubeProxyUser, ""},
	} {
		var groups []string
		if cl.group != "" {
			groups = []string{cl.group}
		}
		kp, err := ca.client(cl.user, groups...)
		if err != nil {
			return err
		}
		if err := os.WriteFile(c.path("config", cl.file), kubeconfig(c.server, c.ca, cl.user, kp), 0o600); err != nil {
			return err
		}
	}

	containerd := fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
# Plugins that would write outside the cluster's directory, and that a test node never needs.
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.erofs"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[debug]
  level = "info"

[plugins.'io.containerd.cri.v1.runtime']
  # Without CAP_SYS_RESOURCE runc cannot lower oom_score_adj below ours, as sandboxes ask.
  restrict_oom_score_adj = true
  # Pods' network namespaces are mounted under the state directory, not /run/netns.
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = %[5]q
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%[6]q]
    conf_dir = %[7]q
    max_conf_num = 1

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %[8]q

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`, c.nodePath("containerd", "root"), c.nodePath("containerd", "state"), n.socket, n.socket+".ttrpc",
		c.nodeBin.runc, c.nodeBin.cniDir, c.nodePath("cni"), sandboxImage)
	if err := os.WriteFile(c.nodePath("containerd.toml"), []byte(containerd), 0o644); err != nil {
		return err
	}

	cni := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "localcluster",
  "plugins": [{
    "type": "bridge",
    "bridge": "cni0",
    "isGateway": true,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "ranges": [[{"subnet": %q}]],
      "routes": [{"dst": "0.0.0.0/0"}],
      "dataDir": %q
    }
  }]
}
`, podSubnet, c.nodePath("cni-ipam"))
	if err := os.WriteFile(c.nodePath("cni", "10-localcluster.conflist"), []byte(cni), 0o644); err != nil {
		return err
	}

	cgroupDriver := "cgroupfs"
	kubelet := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://%[1]s
address: %[2]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[3]q}
authorization:
  mode: Webhook
# This host may run cgroup v1; kubelets since 1.35 refuse it unless told otherwise.
failCgroupV1: false
cgroupDriver: %[4]s
# No QoS hierarchy and no node allocatable enforcement: the node is a guest on a machine it
# does not own. Pods go under their own cgroup parent, which Stop removes.
cgroupsPerQOS: false
enforceNodeAllocatable: []
cgroupRoot: %[5]q
failSwapOn: false
resolvConf: ""
podLogsDir: %[6]q
volumePluginDir: %[7]q
# Imported images cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  imagefs.available: "1%%"
registerNode: true
serializeImagePulls: false
syncFrequency: 10s
nodeStatusUpdateFrequency: 5s
`, n.socket, n.ns.nsIP, c.path("pki", "ca.crt"), cgroupDriver, n.cgroupParent,
		c.nodePath("pod-logs"), c.nodePath("volume-plugins"))
	if err := os.WriteFile(c.nodePath("kubelet.yaml"), []byte(kubelet), 0o644); err != nil {
		return err
	}

	proxy := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection:
  kubeconfig: %[1]q
hostnameOverride: %[2]s
clusterCIDR: %[3]s
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# Leave the host's conntrack sysctls alone: they are not the namespace's own.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, c.path("config", "kube-proxy.kubeconfig"), nodeName, podSubnet)
	return os.WriteFile(c.nodePath("kube-proxy.yaml"), []byte(proxy), 0o644)
}

// newNodeProcess is a process of the node, run inside the cluster's namespace with the tools
// it executes (the runc shim, nft) on its PATH.
func (c *Cluster) newNodeProcess(name, path string, args []string) *process {
	p := c.newProcess(name, path, args)
	p.env = []string{
		"PATH=" + strings.Join([]string{filepath.Dir(c.nodeBin.shim), filepath.Dir(c.nodeBin.runc), filepath.Dir(c.nodeBin.nft), os.Getenv("PATH")}, ":"),
		"LD_LIBRARY_PATH=" + filepath.Join(filepath.Dir(c.nodeBin.nft), "lib"),
	}
	return p
}

// startNode starts containerd, imports the sandbox image, starts the kubelet and kube-proxy,
// and waits until the node is Ready.
func (c *Cluster) startNode(ctx context.Context) error {
	n := c.node
	t := time.Now()
	for _, mount := range mustCgroupMounts() {
		if err := os.MkdirAll(filepath.Join(mount, n.cgroupParent), 0o755); err != nil {
			return fmt.Errorf("creating the pods' cgroup parent: %w", err)
		}
	}
	containerd := c.newNodeProcess(containerdName, c.nodeBin.containerd, []string{"--config=" + c.nodePath("containerd.toml")})
	if err := c.startProcess(containerd); err != nil {
		return err
	}
	if err := c.await(ctx, "containerd's socket", containerd, func(ctx context.Context) error {
		return exec.CommandContext(ctx, c.nodeBin.ctr, "--address", n.socket, "version").Run()
	}); err != nil {
		return err
	}
	if err := c.importImage(ctx, c.nodeBin.pauseLayout, sandboxImage); err != nil {
		return fmt.Errorf("importing the sandbox image: %w", err)
	}
	c.logf("containerd ready in %s", round(time.Since(t)))

	kubelet := c.newNodeProcess(kubeletName, c.nodeBin.kubelet, []string{
		"--config=" + c.nodePath("kubelet.yaml"),
		"--kubeconfig=" + c.path("config", "kubelet.kubeconfig"),
		"--root-dir=" + c.nodePath("kubelet"),
		"--cert-dir=" + c.nodePath("kubelet", "pki"),
		"--hostname-override=" + nodeName,
		"--node-ip=" + n.ns.nsIP.String(),
		"--node-labels=type=real",
		"--v=1",
	})
	proxy := c.newNodeProcess(kubeProxyName, c.nodeBin.kubeProxy, []string{"--config=" + c.nodePath("kube-proxy.yaml"), "--v=1"})
	for _, p := range []*process{kubelet, proxy} {
		if err := c.startProcess(p); err != nil {
			return err
		}
	}
	if err := c.await(ctx, "the real node Ready", kubelet, func(ctx context.Context) error {
		node, err := c.client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				if cond.Status == corev1.ConditionTrue {
					return nil
				}
				return fmt.Errorf("node %s: %s: %s", nodeName, cond.Reason, cond.Message)
			}
		}
		return fmt.Errorf("node %s has no Ready condition yet", nodeName)
	}); err != nil {
		return err
	}
	c.logf("real node %s Ready in %s", nodeName, round(time.Since(t)))
	return nil
}

func mustCgroupMounts() []string {
	m, _ := cgroupMounts()
	return m
}

// importImage streams the OCI layout in dir, as an OCI archive, into containerd's k8s.io
// namespace (the CRI's) under ref.
func (c *Cluster) importImage(ctx context.Context, dir, ref string) error {
	index, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return err
	}
	// containerd names an imported image after this annotation of the index's entry.
	var idx map[string]any
	if err := json.Unmarshal(index, &idx); err != nil {
		return fmt.Errorf("index.json: %w", err)
	}
	manifests, _ := idx["manifests"].([]any)
	if len(manifests) != 1 {
		return fmt.Errorf("index.json lists %d images, want 1", len(manifests))
	}
	entry, _ := manifests[0].(map[string]any)
	annotations, _ := entry["annotations"].(map[string]any)
	if annotations == nil {
		annotations = map[string]any{}
	}
	annotations["io.containerd.image.name"] = ref
	annotations["org.opencontainers.image.ref.name"] = ref
	entry["annotations"] = annotations
	index, err = json.Marshal(idx)
	if err != nil {
		return err
	}

	cmd := exec.CommandContext(ctx, c.nodeBin.ctr, "--address", c.node.socket, "--namespace", "k8s.io",
		"images", "import", "--platform", "linux/amd64", "-")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return err
	}
	werr := writeLayoutArchive(stdin, dir, index)
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("ctr images import: %w: %s", errors.Join(err, werr), strings.TrimSpace(out.String()))
	}
	return werr
}

// writeLayoutArchive writes the OCI layout in dir as a tar archive, with index.json replaced.
func writeLayoutArchive(w io.Writer, dir string, index []byte) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
			return tw.WriteHeader(hdr)
		}
		if rel == "index.json" {
			hdr.Size = int64(len(index))
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			_, err = tw.Write(index)
			return err
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// stopNode takes the node down before the rest of the cluster: the kubelet and kube-proxy
// first, so that nothing starts pods again; then every pod through the CRI (which stops their
// containers, tears down their networks and removes their cgroups); then containerd. Whatever
// survives that (a shim, a container) is killed, and the mounts and cgroups left behind are
// removed. The namespace goes last, in Stop.
func (c *Cluster) stopNode(procs []*process) error {
	n := c.node
	byName := map[string]*process{}
	for _, p := range procs {
		byName[p.name] = p
	}
	var errs []error
	for _, name := range []string{kubeletName, kubeProxyName} {
		if p := byName[name]; p != nil {
			errs = append(errs, p.stop(stopTimeout))
		}
	}
	if p := byName[containerdName]; p != nil {
		if done, _ := p.exited(); !done {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			out, err := exec.CommandContext(ctx, c.nodeBin.crictl, "--runtime-endpoint", "unix://"+n.socket,
				"--timeout", "30s", "rmp", "--all", "--force").CombinedOutput()
			cancel()
			if err != nil {
				c.logf("removing the node's pods: %v: %s", err, strings.TrimSpace(string(out)))
			}
		}
		errs = append(errs, p.stop(stopTimeout))
	}
	errs = append(errs, killInNetns(n.ns), unmountUnder(c.nodePath()), removeCgroups(n.cgroupParent))
	return errors.Join(errs...)
}

// killInNetns kills every process in the namespace, and their descendants, which includes
// containers in their pods' own namespaces (children of the shims).
func killInNetns(n *netns) error {
	target, err := os.Stat(n.path())
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	targetIno := target.Sys().(*syscall.Stat_t).Ino
	for range 10 {
		parents := map[int]int{}
		var roots []int
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if stat, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && stat.Sys().(*syscall.Stat_t).Ino == targetIno {
				roots = append(roots, pid)
			}
			if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
				if i := strings.LastIndexByte(string(data), ')'); i >= 0 {
					if f := strings.Fields(string(data[i+1:])); len(f) > 1 {
						parents[pid], _ = strconv.Atoi(f[1])
					}
				}
			}
		}
		victims := map[int]bool{}
		for _, pid := range roots {
			victims[pid] = true
		}
		for changed := true; changed; {
			changed = false
			for pid, ppid := range parents {
				if victims[ppid] && !victims[pid] {
					victims[pid], changed = true, true
				}
			}
		}
		if len(victims) == 0 {
			return nil
		}
		for pid := range victims {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("processes in %s survived SIGKILL", n.path())
}

// unmountUnder unmounts everything mounted at or below dir, deepest first.
func unmountUnder(dir string) error {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		p := unescapeMountPath(f[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeCgroups removes the pods' cgroup parent, and what is left below it, in every hierarchy.
func removeCgroups(parent string) error {
	var errs []error
	for _, mount := range mustCgroupMounts() {
		root := filepath.Join(mount, parent)
		var dirs []string
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		// Children before parents; a cgroup directory is removed with rmdir, never its files.
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}
