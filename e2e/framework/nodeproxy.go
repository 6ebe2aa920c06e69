package framework

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Commander runs programs where the proxy's upstreams are reachable: localcluster's Node runs
// them inside the cluster's network namespace; HostCommander runs them here.
type Commander interface {
	Command(ctx context.Context, name string, args ...string) *exec.Cmd
}

// HostCommander runs programs in this process's own network namespace.
type HostCommander struct{}

// Command is exec.CommandContext.
func (HostCommander) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, name, args...)
}

// IngressRoute is one site of an IngressProxy: requests for Host go to the ready endpoints of
// Service Namespace/Service on Port, after the gate lets them through (unless Target is empty).
type IngressRoute struct {
	// Host selects the route by the request's Host header; empty is the route for any host.
	Host string
	// Namespace and Service name the Service whose EndpointSlices list the backends.
	Namespace, Service string
	// Port is the backends' port (the Service's targetPort as a number).
	Port int
	// Target is the gate's route, ns/kind/name; empty sends requests to the backends directly.
	// The route also names the Service, so the gate waits for its ready endpoints.
	Target string
	// Timeout is how long the gate holds a request for an idle target (the route's timeout=).
	Timeout time.Duration
	// Page asks the gate for its "starting up" page for browsers (page=true).
	Page bool
}

// IngressGate is the gate an IngressProxy calls with forward_auth: its Service's ready
// endpoints, as for the routes.
type IngressGate struct {
	Namespace, Service string
	Port               int
	Token              string
}

// IngressProxyOptions configure StartIngressProxy.
type IngressProxyOptions struct {
	// Caddy is the binary (CaddyPath).
	Caddy string
	// Dir holds the Caddyfile, Caddy's state, its log and the socket clients connect to; keep
	// the path short (unix socket paths are limited to 107 bytes).
	Dir string
	// Resolver tells Caddy where the endpoints are.
	Resolver *EndpointResolver
	// Run starts Caddy where the endpoints are reachable.
	Run    Commander
	Gate   IngressGate
	Routes []IngressRoute
}

// IngressProxy is a running Caddy that sends requests to Services' ready endpoints, as ingress
// controllers do, with forward_auth to the gate. Clients reach it on a unix socket (Socket,
// Client, Forward), since it runs in the node's network namespace.
type IngressProxy struct {
	socket  string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

// How the proxy looks up endpoints and retries. The refresh interval is how stale Caddy's copy
// of the endpoints may be; lookups cost a unix socket round trip. The retry window covers an
// endpoint the gate saw ready before the resolver's watch did, and a gate replica that went
// away mid-call.
const (
	ingressRefresh     = "100ms"
	ingressTryDuration = "10s"
	ingressTryInterval = "50ms"
)

// IngressCaddyfile renders the proxy's configuration.
func IngressCaddyfile(opts IngressProxyOptions, socket string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n}\n")
	dynamic := func(namespace, service string, port int) string {
		return fmt.Sprintf("\t\tdynamic a {\n\t\t\tname %s\n\t\t\tport %d\n\t\t\trefresh %s\n\t\t\tresolvers unix/%s\n\t\t\tversions ipv4\n\t\t}\n"+
			"\t\tlb_try_duration %s\n\t\tlb_try_interval %s\n",
			opts.Resolver.Name(namespace, service), port, ingressRefresh, opts.Resolver.Socket(), ingressTryDuration, ingressTryInterval)
	}
	for _, r := range opts.Routes {
		fmt.Fprintf(&b, "http://%s {\n\tbind unix/%s\n", r.Host, socket)
		if r.Target != "" {
			// service= makes the gate answer 200 only once the Service's EndpointSlices list a
			// ready endpoint, the ones this proxy sends to (docs/routable.md).
			uri := "/auth?target=" + r.Target + "&service=" + r.Namespace + "/" + r.Service
			if r.Timeout > 0 {
				uri += "&timeout=" + r.Timeout.String()
			}
			if r.Page {
				uri += "&page=true"
			}
			fmt.Fprintf(&b, "\tforward_auth {\n\t\turi %s\n", uri)
			if opts.Gate.Token != "" {
				fmt.Fprintf(&b, "\t\theader_up X-Zerowake-Token %q\n", opts.Gate.Token)
			}
			b.WriteString(dynamic(opts.Gate.Namespace, opts.Gate.Service, opts.Gate.Port))
			b.WriteString("\t}\n")
		}
		fmt.Fprintf(&b, "\treverse_proxy {\n%s\t}\n}\n", dynamic(r.Namespace, r.Service, r.Port))
	}
	return b.String()
}

// StartIngressProxy writes the Caddyfile, starts Caddy with opts.Run and returns once it
// accepts connections on its socket.
func StartIngressProxy(ctx context.Context, opts IngressProxyOptions) (*IngressProxy, error) {
	p := &IngressProxy{socket: filepath.Join(opts.Dir, "http.sock"), logPath: filepath.Join(opts.Dir, "caddy.log"), done: make(chan struct{})}
	config := filepath.Join(opts.Dir, "Caddyfile")
	if err := os.WriteFile(config, []byte(IngressCaddyfile(opts, p.socket)), 0o644); err != nil {
		return nil, err
	}
	_ = os.Remove(p.socket)
	logFile, err := os.Create(p.logPath)
	if err != nil {
		return nil, err
	}
	// Not tied to ctx: the proxy lives until Stop.
	p.cmd = opts.Run.Command(context.Background(), opts.Caddy, "run", "--config", config, "--adapter", "caddyfile")
	p.cmd.Dir = opts.Dir
	// Caddy keeps certificates and state under $HOME or the XDG directories; keep them here.
	p.cmd.Env = append(os.Environ(), "HOME="+opts.Dir, "XDG_DATA_HOME="+opts.Dir, "XDG_CONFIG_HOME="+opts.Dir)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if p.cmd.SysProcAttr == nil {
		p.cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	p.cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	go func() { _ = p.cmd.Wait(); logFile.Close(); close(p.done) }()
	readyCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		conn, err := net.Dial("unix", p.socket)
		if err == nil {
			conn.Close()
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("caddy exited:\n%s", p.Log())
		case <-readyCtx.Done():
			p.Stop()
			return nil, fmt.Errorf("caddy not listening on %s:\n%s", p.socket, p.Log())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Socket is the unix socket Caddy serves HTTP on.
func (p *IngressProxy) Socket() string { return p.socket }

// LogPath is the file Caddy logs to.
func (p *IngressProxy) LogPath() string { return p.logPath }

// Log returns Caddy's log so far.
func (p *IngressProxy) Log() string {
	data, _ := os.ReadFile(p.logPath)
	return string(data)
}

// Client returns an HTTP client whose every connection goes to the proxy's socket, whatever
// the URL's host (which selects the route). Each call gets its own connections, so concurrent
// requests are concurrent on the proxy too.
func (p *IngressProxy) Client(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", p.socket)
			},
			MaxIdleConnsPerHost: 100,
		},
	}
}

// Forward listens on address (e.g. 127.0.0.1:0) and copies each connection to the proxy's
// socket, so that a browser on this machine can use the proxy. It returns the address it
// listens on and a function that stops it.
func (p *IngressProxy) Forward(address string) (string, func(), error) {
	l, err := net.Listen("tcp", address)
	if err != nil {
		return "", nil, err
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			client, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer client.Close()
				upstream, err := net.Dial("unix", p.socket)
				if err != nil {
					return
				}
				defer upstream.Close()
				go func() { _, _ = io.Copy(upstream, client); upstream.(*net.UnixConn).CloseWrite() }()
				_, _ = io.Copy(client, upstream)
			}()
		}
	})
	return l.Addr().String(), func() { l.Close(); wg.Wait() }, nil
}

// Stop ends Caddy (SIGTERM, SIGKILL after 10s) and waits for it.
func (p *IngressProxy) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}
