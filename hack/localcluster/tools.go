package localcluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
)

// binaries are the executables a cluster runs, located through hack/tools.sh.
type binaries struct {
	etcd, apiserver, controllerManager, scheduler, kubectl, kwok string
	kwokStages                                                   []string
}

// RepoRoot returns the root of the zerowake repository: $ZEROWAKE_ROOT if set, else the
// directory this source file was compiled from, else the nearest ancestor of the working
// directory that holds hack/tools.sh.
func RepoRoot() (string, error) {
	if root := os.Getenv("ZEROWAKE_ROOT"); root != "" {
		return root, nil
	}
	// runtime.Caller reports a module-relative path under -trimpath, so check that it is usable.
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		root := filepath.Join(filepath.Dir(file), "..", "..")
		if isRepoRoot(root) {
			return filepath.Clean(root), nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if isRepoRoot(dir) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the zerowake repository (no hack/tools.sh above the working directory); set ZEROWAKE_ROOT")
		}
		dir = parent
	}
}

func isRepoRoot(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "hack", "tools.sh"))
	return err == nil
}

// CacheDir returns the directory hack/tools.sh caches binaries in; it follows the same rules.
func CacheDir() string {
	if dir := os.Getenv("ZEROWAKE_CACHE"); dir != "" {
		return dir
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "zerowake")
}

// DefaultDir is where the CLI keeps a detached cluster unless told otherwise.
func DefaultDir() string { return filepath.Join(CacheDir(), "localcluster") }

// ensureBinaries builds whatever hack/tools.sh has not cached yet and returns where everything is.
func ensureBinaries(root string, log io.Writer, realNode bool) (*binaries, *nodeBinaries, error) {
	b, err := ensureTools(root, log, realNode)
	if err != nil || !realNode {
		return b, nil, err
	}
	paths, err := toolPaths(root, "containerd", "containerd-shim-runc-v2", "ctr", "crictl", "runc", "kubelet", "kube-proxy", "nft", "bridge", "pause")
	if err != nil {
		return nil, nil, err
	}
	return b, &nodeBinaries{
		containerd: paths[0], shim: paths[1], ctr: paths[2], crictl: paths[3], runc: paths[4],
		kubelet: paths[5], kubeProxy: paths[6], nft: paths[7], cniDir: filepath.Dir(paths[8]), pauseLayout: paths[9],
	}, nil
}

func ensureTools(root string, log io.Writer, realNode bool) (*binaries, error) {
	if err := os.MkdirAll(CacheDir(), 0o755); err != nil {
		return nil, err
	}
	// Test packages run in parallel and each starts a cluster; tools.sh builds into fixed
	// temporary names, so concurrent cold builds must not overlap.
	lock, err := os.OpenFile(filepath.Join(CacheDir(), "tools.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	tools := filepath.Join(root, "hack", "tools.sh")
	targets := []string{"all"}
	if realNode {
		targets = append(targets, "node")
	}
	cmd := exec.Command("bash", append([]string{tools}, targets...)...)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w", tools, strings.Join(targets, " "), err)
	}

	paths, err := toolPaths(root, "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")
	if err != nil {
		return nil, err
	}
	b := &binaries{
		etcd: paths[0], apiserver: paths[1], controllerManager: paths[2],
		scheduler: paths[3], kubectl: paths[4], kwok: paths[5],
	}
	b.kwokStages, err = filepath.Glob(filepath.Join(filepath.Dir(b.kwok), "stages", "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(b.kwokStages) == 0 {
		return nil, fmt.Errorf("no kwok stages in %s; remove it and run hack/tools.sh kwok", filepath.Dir(b.kwok))
	}
	return b, nil
}

// toolPaths returns where hack/tools.sh put the named tools, in one run of it, and fails
// unless each exists.
func toolPaths(root string, names ...string) ([]string, error) {
	var stderr bytes.Buffer
	cmd := exec.Command("bash", append([]string{filepath.Join(root, "hack", "tools.sh"), "path"}, names...)...)
	cmd.Dir, cmd.Stderr = root, &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("hack/tools.sh path %s: %w: %s", strings.Join(names, " "), err, strings.TrimSpace(stderr.String()))
	}
	paths := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(paths) != len(names) {
		return nil, fmt.Errorf("hack/tools.sh path %s printed %d lines, want %d", strings.Join(names, " "), len(paths), len(names))
	}
	for i, path := range paths {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("%s was not built: %w", names[i], err)
		}
	}
	return paths, nil
}
