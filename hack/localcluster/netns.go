package localcluster

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
)

// netns is a network namespace that a cluster with a real node lives in, joined to the host by
// a veth pair on a private /30. Pod and Service addresses exist only inside it, so that test
// traffic cannot leave the machine: the host gets no route but the veth's own /30.
type netns struct {
	name   string // also the file under /run/netns
	hostIf string // the host's end of the veth pair
	hostIP net.IP // the address of the host's end
	nsIP   net.IP // the address of the namespace's end (eth0), where the apiserver listens
}

const (
	netnsDir = "/run/netns"
	// vethPool holds the /30s of the veth pairs, one picked at random per cluster.
	vethPool = "10.250.0.0/16"
	// nsIf is the namespace's end of the veth pair; the namespace has no other link but lo.
	nsIf = "eth0"
)

func (n *netns) path() string { return netnsDir + "/" + n.name }

// newNetns creates a network namespace with a fresh name and a veth pair into it. On error it
// removes what it created.
func newNetns(ctx context.Context) (_ *netns, err error) {
	var id [3]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	suffix := hex.EncodeToString(id[:])
	n := &netns{name: "zw-" + suffix, hostIf: "zwh-" + suffix}
	n.hostIP, n.nsIP, err = pickVethAddresses()
	if err != nil {
		return nil, err
	}
	if err := run(ctx, "ip", "netns", "add", n.name); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, n.delete(context.WithoutCancel(ctx)))
		}
	}()
	steps := [][]string{
		{"ip", "link", "add", n.hostIf, "type", "veth", "peer", "name", nsIf, "netns", n.name},
		{"ip", "addr", "add", n.hostIP.String() + "/30", "dev", n.hostIf},
		{"ip", "link", "set", n.hostIf, "up"},
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return nil, err
		}
	}
	inside := [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", n.nsIP.String() + "/30", "dev", nsIf},
		{"ip", "link", "set", nsIf, "up"},
		// Service addresses need a route for a connection to them to start at all; kube-proxy
		// then rewrites the destination on the way out. No default route: nothing inside
		// has any business elsewhere.
		{"ip", "route", "add", serviceCIDR, "dev", nsIf, "src", n.nsIP.String()},
	}
	for _, s := range inside {
		if err := run(ctx, "nsenter", append([]string{"--net=" + n.path(), "--"}, s...)...); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// pickVethAddresses picks a /30 from vethPool that no local interface uses, and returns its
// two usable addresses.
func pickVethAddresses() (host, ns net.IP, err error) {
	_, pool, _ := net.ParseCIDR(vethPool)
	used, err := net.InterfaceAddrs()
	if err != nil {
		return nil, nil, err
	}
	for range 20 {
		var r [2]byte
		if _, err := rand.Read(r[:]); err != nil {
			return nil, nil, err
		}
		// The /30 is the random 16 bits below the pool's prefix, with the last two bits cleared.
		base := binary.BigEndian.Uint32(pool.IP.To4()) | uint32(binary.BigEndian.Uint16(r[:])&^3)
		host, ns = uint32IP(base+1), uint32IP(base+2)
		clash := false
		for _, a := range used {
			if ipNet, ok := a.(*net.IPNet); ok && (ipNet.Contains(host) || ipNet.Contains(ns) || ipNet.IP.Equal(host)) {
				clash = true
			}
		}
		if !clash {
			return host, ns, nil
		}
	}
	return nil, nil, fmt.Errorf("no free /30 in %s", vethPool)
}

func uint32IP(v uint32) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, v)
	return ip
}

// delete removes the veth pair, then the namespace. The pair is deleted first and by name: the
// kernel tears a deleted namespace down in the background, so the pair would otherwise outlive
// Stop for a moment (seen once: the host's end still there right after Stop).
func (n *netns) delete(ctx context.Context) error {
	if n.hostIf != "" {
		if _, err := net.InterfaceByName(n.hostIf); err == nil {
			if err := run(ctx, "ip", "link", "delete", n.hostIf); err != nil {
				return err
			}
		}
	}
	if _, err := os.Stat(n.path()); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return run(ctx, "ip", "netns", "delete", n.name)
}

// wrap returns the command line that runs path with args inside the namespace. nsenter only
// joins the network namespace: `ip netns exec` would also remount /sys, hiding the cgroup
// mounts from the kubelet and runc. nsenter execs the program, so its pid, process group and
// parent-death signal stay those of the started process.
func (n *netns) wrap(path string, args []string) (string, []string) {
	return n.wrapPath(n.path(), path, args)
}

func (*netns) wrapPath(nsPath, path string, args []string) (string, []string) {
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		nsenter = "nsenter"
	}
	return nsenter, append([]string{"--net=" + nsPath, "--", path}, args...)
}

// dial connects to addr from inside the namespace. A socket belongs to the network namespace
// of the thread that creates it and keeps it, so the socket is made on a thread that has
// joined the namespace for the moment, and the connection is then used from anywhere.
func (n *netns) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	// Only literal addresses: a name lookup could run on other threads, outside the namespace.
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if net.ParseIP(host) == nil {
		return nil, fmt.Errorf("localcluster: dial %s: the node's namespace has no DNS; give an IP address", addr)
	}
	target, err := os.Open(n.path())
	if err != nil {
		return nil, err
	}
	defer target.Close()

	type result struct {
		conn net.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: err}
			return
		}
		defer self.Close()
		if err := setns(target); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("joining %s: %w", n.path(), err)}
			return
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		if setns(self) == nil {
			runtime.UnlockOSThread()
		}
		// Otherwise the thread stays locked and Go discards it when this goroutine ends, so
		// no other goroutine runs in the wrong namespace.
		done <- result{conn, err}
	}()
	r := <-done
	return r.conn, r.err
}

// run runs a setup command and returns its output in the error if it fails.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
