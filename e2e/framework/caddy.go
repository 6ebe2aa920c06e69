package framework

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/zerowake/zerowake/hack/localcluster"
)

// CaddyPath returns where hack/tools.sh keeps the Caddy binary, building it if it is missing.
func CaddyPath(ctx context.Context) (string, error) {
	root, err := localcluster.RepoRoot()
	if err != nil {
		return "", err
	}
	tools := filepath.Join(root, "hack", "tools.sh")
	if out, err := exec.CommandContext(ctx, "bash", tools, "caddy").CombinedOutput(); err != nil {
		return "", fmt.Errorf("hack/tools.sh caddy: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, "bash", tools, "path", "caddy").Output()
	if err != nil {
		return "", fmt.Errorf("hack/tools.sh path caddy: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// CaddyGlobalOptions start a Caddyfile for a test's Caddy: no admin API, no automatic HTTPS,
// nothing persisted.
const CaddyGlobalOptions = "{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n}\n"

// Proxy is a running proxy process (Caddy, nginx).
type Proxy struct {
	cmd     *exec.Cmd
	done    chan struct{}
	LogPath string
}

// StartCaddy runs binary with caddyfile (starting with CaddyGlobalOptions) in dir, and returns
// once address accepts connections.
func StartCaddy(ctx context.Context, binary, dir, caddyfile, address string) (*Proxy, error) {
	config := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(config, []byte(caddyfile), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, "run", "--config", config, "--adapter", "caddyfile")
	// Caddy keeps certificates and state under $HOME or the XDG directories; keep them here.
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	return startProxy(ctx, "caddy", cmd, dir, address)
}

// StartNginx runs the nginx binary with conf (which must keep its pid file, logs and temporary
// paths under dir, and say "daemon off") in dir, and returns once every address accepts
// connections.
func StartNginx(ctx context.Context, binary, dir, conf string, addresses ...string) (*Proxy, error) {
	config := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(config, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, "-p", dir, "-c", config, "-e", filepath.Join(dir, "error.log"))
	return startProxy(ctx, "nginx", cmd, dir, addresses...)
}

// startProxy starts cmd in dir with its output in dir/name.log, and returns once every address
// accepts connections.
func startProxy(ctx context.Context, name string, cmd *exec.Cmd, dir string, addresses ...string) (*Proxy, error) {
	c := &Proxy{cmd: cmd, LogPath: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	logFile, err := os.Create(c.LogPath)
	if err != nil {
		return nil, err
	}
	c.cmd.Dir = dir
	c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	go func() { _ = c.cmd.Wait(); logFile.Close(); close(c.done) }()
	readyCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for _, address := range addresses {
		for {
			conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(readyCtx, "tcp", address)
			if err == nil {
				conn.Close()
				break
			}
			select {
			case <-c.done:
				log, _ := os.ReadFile(c.LogPath)
				return nil, fmt.Errorf("%s exited:\n%s", name, log)
			case <-readyCtx.Done():
				c.Stop()
				log, _ := os.ReadFile(c.LogPath)
				return nil, fmt.Errorf("%s not listening on %s:\n%s", name, address, log)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return c, nil
}

// Stop ends the proxy (SIGTERM, SIGKILL after 10s) and waits for it.
func (c *Proxy) Stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}
