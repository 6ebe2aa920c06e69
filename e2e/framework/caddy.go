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

// Caddy is a running Caddy process.
type Caddy struct {
	cmd     *exec.Cmd
	done    chan struct{}
	LogPath string
}

// StartCaddy runs binary with caddyfile (its admin API and automatic HTTPS should be off, see
// e2e/gate) in dir, and returns once address accepts connections.
func StartCaddy(ctx context.Context, binary, dir, caddyfile, address string) (*Caddy, error) {
	config := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(config, []byte(caddyfile), 0o644); err != nil {
		return nil, err
	}
	c := &Caddy{LogPath: filepath.Join(dir, "caddy.log"), done: make(chan struct{})}
	logFile, err := os.Create(c.LogPath)
	if err != nil {
		return nil, err
	}
	c.cmd = exec.Command(binary, "run", "--config", config, "--adapter", "caddyfile")
	c.cmd.Dir = dir
	// Caddy keeps certificates and state under $HOME or the XDG directories; keep them here.
	c.cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	go func() { _ = c.cmd.Wait(); logFile.Close(); close(c.done) }()
	readyCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(readyCtx, "tcp", address)
		if err == nil {
			conn.Close()
			return c, nil
		}
		select {
		case <-c.done:
			log, _ := os.ReadFile(c.LogPath)
			return nil, fmt.Errorf("caddy exited:\n%s", log)
		case <-readyCtx.Done():
			c.Stop()
			log, _ := os.ReadFile(c.LogPath)
			return nil, fmt.Errorf("caddy not listening on %s:\n%s", address, log)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop ends Caddy (SIGTERM, SIGKILL after 10s) and waits for it.
func (c *Caddy) Stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}
