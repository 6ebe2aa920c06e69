package e2e

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
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// controllerProcess is a running cmd/zerowake-controller.
type controllerProcess struct {
	name    string
	cmd     *exec.Cmd
	done    chan struct{}
	logPath string
	ops     string // address of /metrics, /healthz, /readyz
}

// startController runs the controller binary as the identity in config, with an operations
// address on a free loopback port, and waits until it reports ready.
func startController(ctx context.Context, name string, config *rest.Config, args ...string) (*controllerProcess, error) {
	kubeconfig := filepath.Join(logDir(), "controller-"+name+".kubeconfig")
	if err := writeKubeconfig(kubeconfig, config); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	p := &controllerProcess{name: name, done: make(chan struct{}), logPath: filepath.Join(logDir(), "controller-"+name+".log"),
		ops: "127.0.0.1:" + strconv.Itoa(port)}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		return nil, err
	}
	args = append([]string{"--kubeconfig=" + kubeconfig, "--ops-address=" + p.ops, "--log-format=json", "--log-level=debug"}, args...)
	p.cmd = exec.Command(controllerBinary, args...)
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
	for {
		if resp, err := http.Get("http://" + p.ops + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("controller %s exited while starting:\n%s", name, p.tail(30))
		case <-readyCtx.Done():
			p.kill()
			return nil, fmt.Errorf("controller %s not ready in time:\n%s", name, p.tail(30))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM and waits for a clean exit, killing after timeout. It reports whether the
// process exited by itself.
func (p *controllerProcess) stop(timeout time.Duration) (graceful bool) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		p.kill()
		return false
	}
}

func (p *controllerProcess) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// tail returns the last n lines of the controller's log.
func (p *controllerProcess) tail(n int) string {
	data, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// metric returns the sum of a counter's samples whose labels contain every given pair.
func (p *controllerProcess) metric(name string, labels ...string) (float64, error) {
	resp, err := http.Get("http://" + p.ops + "/metrics")
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

func writeKubeconfig(path string, config *rest.Config) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: config.Host, CertificateAuthorityData: config.CAData}
	cfg.AuthInfos["controller"] = &clientcmdapi.AuthInfo{Token: config.BearerToken,
		ClientCertificateData: config.CertData, ClientKeyData: config.KeyData}
	cfg.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "controller"}
	cfg.CurrentContext = "local"
	return clientcmd.WriteToFile(*cfg, path)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
