package localcluster

import (
	"context"
	"errors"
	"fmt"
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
)

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
	errs = append(errs, killInNetns(n.ns), unmountUnder(c.nodePath()), removeCgroups(n.cgroupParent),
		removeLogLinks(c.nodePath()), removeStaleShimSockets())
	return errors.Join(errs...)
}

// netnsFile, in the node's directory, names the cluster's network namespace.
const netnsFile = "netns"

// sweepNode removes what the real node of a dead cluster in dir left behind: processes in its
// namespace and their descendants, mounts under dir, the pods' cgroups, log links and the
// namespace. A directory without a real node needs nothing but its unmounting.
func sweepNode(dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, "node", netnsFile))
	if errors.Is(err, os.ErrNotExist) {
		return unmountUnder(dir)
	}
	if err != nil {
		return err
	}
	name := strings.TrimSpace(string(data))
	if !strings.HasPrefix(name, "zw-") || strings.ContainsAny(name, "/.") {
		return fmt.Errorf("%s: not a namespace of ours: %q", filepath.Join(dir, "node", netnsFile), name)
	}
	ns := &netns{name: name}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return errors.Join(killInNetns(ns), unmountUnder(dir), removeCgroups(cgroupParentFor(ns)),
		removeLogLinks(filepath.Join(dir, "node")), removeStaleShimSockets(), ns.delete(ctx))
}

// cgroupParentFor names the cgroup root of the pods of the node in ns.
func cgroupParentFor(ns *netns) string { return "/localcluster-" + strings.TrimPrefix(ns.name, "zw-") }

// shimSockets is where every containerd's shims listen, whatever its configuration says. A
// shim removes its socket when it exits, unless it is killed.
const shimSockets = "/run/containerd/s"

// removeStaleShimSockets removes the sockets in shimSockets that nothing listens on any more.
// They may belong to other nodes on the machine, so a socket goes only when a connection to it
// is refused: a live shim accepts, whatever network namespace it is in.
func removeStaleShimSockets() error {
	entries, err := os.ReadDir(shimSockets)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	var errs []error
	for _, e := range entries {
		if e.Type()&fs.ModeSocket == 0 {
			continue
		}
		path := filepath.Join(shimSockets, e.Name())
		conn, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			conn.Close()
			continue
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// containerLogLinks is where every kubelet links its containers' logs, whatever its
// configuration says; the links of pods removed through the CRI stay behind.
const containerLogLinks = "/var/log/containers"

// removeLogLinks removes the links in containerLogLinks that point into dir.
func removeLogLinks(dir string) error {
	entries, err := os.ReadDir(containerLogLinks)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	var errs []error
	for _, e := range entries {
		link := filepath.Join(containerLogLinks, e.Name())
		if target, err := os.Readlink(link); err == nil && strings.HasPrefix(target, dir+"/") {
			if err := os.Remove(link); err != nil {
				errs = append(errs, err)
			}
		}
	}
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
	for _, mount := range knownCgroupMounts() {
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
