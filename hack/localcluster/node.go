package localcluster

import (
	"context"
	"errors"
	"net"
	"os/exec"
)

// Node is the cluster's one real node: containerd, runc, the CNI bridge plugin, the kubelet
// and kube-proxy, running beside kwok's simulated nodes. Pods scheduled to it run real
// containers. It lives, with the whole cluster, in a network namespace that the cluster
// creates and deletes, so pod and Service addresses exist only there.
type Node struct {
	name string
}

// Node returns the real node, or nil unless the cluster was started with Options.RealNode.
func (c *Cluster) Node() *Node { return c.node }

// Name returns the name of the node's Node object.
func (n *Node) Name() string { return n.name }

// ImportImage imports the OCI layout in ociLayoutDir (as hack/tools/image writes it:
// OUT/NAME/oci) into the node's containerd as ref, e.g. "zerowake.local/testapp:dev", so that
// pods with imagePullPolicy: Never can run it.
func (n *Node) ImportImage(ctx context.Context, ociLayoutDir, ref string) error {
	return errors.New("localcluster: ImportImage: not implemented yet")
}

// DialContext connects from this process to an address inside the cluster's network
// namespace: a pod IP, a Service's ClusterIP, or a process started with Command.
func (n *Node) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return nil, errors.New("localcluster: DialContext: not implemented yet")
}

// Command returns a command that runs inside the cluster's network namespace.
func (n *Node) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, name, args...)
}

// Requirements returns nil if this host can run a real node, or the reason it cannot.
func (n *Node) Requirements() error { return NodeRequirements() }

// NodeRequirements returns nil if this host can run a real node (Options.RealNode), or the
// reason it cannot; it needs no cluster.
func NodeRequirements() error {
	return errors.New("localcluster: real nodes are not implemented yet")
}
