package localcluster

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

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

	containerd := fmt.Sprintf(`version = 4
root = %[1]q
state = %[2]q
# Plugins that would write outside the cluster's directory, and that a test node never needs.
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.erofs"]

[debug]
  level = "info"

[plugins.'io.containerd.server.v1.grpc']
  address = %[3]q

[plugins.'io.containerd.server.v1.ttrpc']
  address = %[4]q

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
        Root = %[9]q
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
		c.nodeBin.runc, c.nodeBin.cniDir, c.nodePath("cni"), sandboxImage, c.nodePath("runc"))
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

	// cgroupfs, not systemd: the node must not depend on the host's init system, and cgroupfs
	// works on v1, hybrid and v2 hosts alike.
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
# Every pod's cgroup lies below the cluster's own cgroup root (kubepods/...), which Stop
# removes; without the QoS hierarchy the kubelet would ignore cgroupRoot and containerd would
# put pods under /k8s.io, shared with every other node on the machine. No node allocatable
# enforcement: the node is a guest on a machine it does not own.
cgroupsPerQOS: true
enforceNodeAllocatable: []
cgroupRoot: %[5]q
failSwapOn: false
# Never change the machine's kernel settings; NodeRequirements checks them instead.
protectKernelDefaults: true
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
	for _, mount := range knownCgroupMounts() {
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
	// Ready and untainted: the controller manager lifts the not-ready taint moments after the
	// kubelet reports Ready, and until then the scheduler would not place pods here.
	if err := c.await(ctx, "the real node Ready and untainted", kubelet, func(ctx context.Context) error {
		node, err := c.client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				if cond.Status == corev1.ConditionTrue {
					if len(node.Spec.Taints) > 0 {
						return fmt.Errorf("node %s has taints %v", nodeName, node.Spec.Taints)
					}
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
