// Package framework runs the zerowake controller binary against a local control plane, for the
// end-to-end tests, the fault tests and the benchmarks.
package framework

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"

	"github.com/zerowake/zerowake/hack/localcluster"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// BuildController builds cmd/zerowake-controller into dir and returns the binary's path.
func BuildController(ctx context.Context, dir string) (string, error) {
	root, err := localcluster.RepoRoot()
	if err != nil {
		return "", err
	}
	binary := filepath.Join(dir, "zerowake-controller")
	build := exec.CommandContext(ctx, "go", "build", "-o", binary, "./cmd/zerowake-controller")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the controller: %v\n%s", err, out)
	}
	return binary, nil
}

// Controller is a running cmd/zerowake-controller process.
type Controller struct {
	Name string
	// Ops is the address of /metrics, /healthz and /readyz.
	Ops     string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

// ControllerOptions say how to run the controller.
type ControllerOptions struct {
	// Name tells controllers apart in file names and messages.
	Name string
	// Binary is the path from BuildController.
	Binary string
	// Config is the identity and server the controller uses.
	Config *rest.Config
	// Dir receives the controller's kubeconfig and log.
	Dir string
	// Args are extra flags.
	Args []string
	// OpsAddress is where the process serves /metrics, /healthz and /readyz; empty means a
	// free port on 127.0.0.1. (Replicas that a proxy health-checks on one port each take their
	// own loopback address.)
	OpsAddress string
	// NotReadyOK returns as soon as the process serves /healthz, for a standby replica that
	// does not lead (its /readyz still answers once its cache syncs).
	NotReadyOK bool
}

// StartController runs the controller binary as the identity in opts.Config, with an
// operations address on a free loopback port, and waits until it reports ready.
func StartController(ctx context.Context, opts ControllerOptions) (*Controller, error) {
	name, config, args := opts.Name, opts.Config, opts.Args
	kubeconfig := filepath.Join(opts.Dir, "controller-"+name+".kubeconfig")
	if err := WriteKubeconfig(kubeconfig, config); err != nil {
		return nil, err
	}
	p := &Controller{Name: name, done: make(chan struct{}), LogPath: filepath.Join(opts.Dir, "controller-"+name+".log"),
		Ops: opts.OpsAddress}
	if p.Ops == "" {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		p.Ops = "127.0.0.1:" + strconv.Itoa(port)
	}
	logFile, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	args = append([]string{"--kubeconfig=" + kubeconfig, "--ops-address=" + p.Ops, "--log-format=json", "--log-level=debug"}, args...)
	p.cmd = exec.Command(opts.Binary, args...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	// If the test binary dies, the controller dies with it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	go func() {
		_ = p.cmd.Wait()
		logFile.Close()
		close(p.done)
	}()

	readyCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	probe := "/readyz"
	if opts.NotReadyOK {
		probe = "/healthz"
	}
	for {
		if resp, err := http.Get("http://" + p.Ops + probe); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("controller %s exited while starting:\n%s", name, p.Tail(30))
		case <-readyCtx.Done():
			p.Kill()
			return nil, fmt.Errorf("controller %s not ready in time:\n%s", name, p.Tail(30))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop sends SIGTERM and waits for a clean exit, killing after timeout. It reports whether the
// process exited by itself.
func (p *Controller) Stop(timeout time.Duration) (graceful bool) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		p.Kill()
		return false
	}
}

// Signal sends sig without waiting; Done tells when the process has ended.
func (p *Controller) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill sends SIGKILL and waits for the process to end.
func (p *Controller) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Tail returns the last n lines of the controller's log.
func (p *Controller) Tail(n int) string {
	data, _ := os.ReadFile(p.LogPath)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Metric returns the sum of a counter's samples whose labels contain every given pair.
func (p *Controller) Metric(name string, labels ...string) (float64, error) {
	resp, err := http.Get("http://" + p.Ops + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return sumMetric(resp.Body, name, labels...)
}

func sumMetric(r io.Reader, name string, labels ...string) (float64, error) {
	var total float64
	scanner := bufio.NewScanner(r)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	for scanner.Scan() {
		line := scanner.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		matches := true
		for i := 0; i+1 < len(labels); i += 2 {
			if !strings.Contains(line, labels[i]+`="`+labels[i+1]+`"`) {
				matches = false
			}
		}
		if !matches {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			return 0, err
		}
		total += v
	}
	return total, scanner.Err()
}

// Done is closed when the process has exited.
func (p *Controller) Done() <-chan struct{} { return p.done }

// Pid is the process id.
func (p *Controller) Pid() int { return p.cmd.Process.Pid }

// ExitCode is the process's exit code once Done is closed (-1 if it was killed by a signal).
func (p *Controller) ExitCode() int { return p.cmd.ProcessState.ExitCode() }

// WriteKubeconfig writes config (server, CA, token or client certificate) as a kubeconfig.
func WriteKubeconfig(path string, config *rest.Config) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: config.Host, CertificateAuthorityData: config.CAData}
	cfg.AuthInfos["controller"] = &clientcmdapi.AuthInfo{Token: config.BearerToken,
		ClientCertificateData: config.CertData, ClientKeyData: config.KeyData}
	cfg.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "controller"}
	cfg.CurrentContext = "local"
	return clientcmd.WriteToFile(*cfg, path)
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
