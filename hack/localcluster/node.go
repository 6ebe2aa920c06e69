package localcluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
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
	sandboxImage = "localcluster.local/pause:sandbox"

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
	if err := checkKernelTunables(); err != nil {
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

// kubeletKernelTunables are the kernel settings a kubelet insists on. A kubelet changes them
// machine-wide unless told to protect them (protectKernelDefaults), which the node does: a
// test harness has no business changing how the kernel reacts to an oops. So they must be set
// beforehand, by whoever owns the machine.
var kubeletKernelTunables = []struct {
	name  string
	value int
}{
	{"vm.overcommit_memory", 1},
	{"vm.panic_on_oom", 0},
	{"kernel.panic", 10},
	{"kernel.panic_on_oops", 1},
	{"kernel.keys.root_maxkeys", 1000000},
	{"kernel.keys.root_maxbytes", 25000000},
}

func checkKernelTunables() error {
	var wrong []string
	for _, t := range kubeletKernelTunables {
		path := "/proc/sys/" + strings.ReplaceAll(t.name, ".", "/")
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
		if v, err := strconv.Atoi(strings.TrimSpace(string(data))); err != nil || v != t.value {
			wrong = append(wrong, fmt.Sprintf("%s=%d", t.name, t.value))
		}
	}
	if len(wrong) > 0 {
		return fmt.Errorf("the kubelet needs kernel settings that this machine lacks, and the node does not change them itself; if that is acceptable here, run: sysctl -w %s", strings.Join(wrong, " "))
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

// knownCgroupMounts is cgroupMounts, or none if they cannot be read (NodeRequirements says so
// before any node starts).
func knownCgroupMounts() []string {
	m, _ := cgroupMounts()
	return m
}
