package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zerowake/zerowake/e2e/framework"
	"github.com/zerowake/zerowake/gate"
	"github.com/zerowake/zerowake/hack/localcluster"
)

// The gate's cost in the request path: requests through a proxy, with and without the
// forward-auth call to the gate, for a target that is awake, at several concurrencies.

// ProxyLoad is one proxy path at one concurrency: n requests sent by that many clients with
// keep-alive connections, as fast as they are answered.
type ProxyLoad struct {
	// Path is "caddy" (no gate), "caddy+gate" (forward_auth), "nginx" (no gate),
	// "nginx+gate" (auth_request) or "nginx+gate+cache" (auth_request, the gate's 200
	// cached for CacheS seconds).
	Path        string      `json:"path"`
	Concurrency int         `json:"concurrency"`
	Requests    int         `json:"requests"`
	RPS         float64     `json:"rps"`
	LatencyUs   Percentiles `json:"latency_us"`
}

// loadConcurrencies are the numbers of clients at once.
var loadConcurrencies = []int{1, 8, 32}

// nginxCache is how long the cached nginx path keeps the gate's 200.
const nginxCache = time.Second

// The goals for the gate in the path, at every concurrency: throughput at least this share of
// the proxy's without the gate, and at most this much added at p99.
const (
	loadMinRatio      = 0.8
	loadMaxAddedP99Us = 1000
)

// proxyLoad measures each proxy path at each concurrency, n requests each, interleaved (all
// paths at one concurrency, then the next) so that a change in the machine's load touches all
// paths alike. sites maps a path to its URL.
func proxyLoad(ctx context.Context, paths []string, sites map[string]string, n int) ([]ProxyLoad, error) {
	var out []ProxyLoad
	for _, c := range loadConcurrencies {
		for _, path := range paths {
			l, err := loadRun(ctx, sites[path], c, n)
			if err != nil {
				return nil, fmt.Errorf("%s at %d clients: %w", path, c, err)
			}
			l.Path = path
			out = append(out, l)
		}
	}
	return out, nil
}

// loadRun sends n requests to url from concurrency clients, after a warm-up that opens their
// connections, and times each request and the whole run.
func loadRun(ctx context.Context, url string, concurrency, n int) (ProxyLoad, error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: concurrency, MaxIdleConnsPerHost: concurrency}}
	defer client.CloseIdleConnections()
	get := func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("answer %d", resp.StatusCode)
		}
		return nil
	}
	run := func(n int, times samples) (time.Duration, error) {
		var next atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, concurrency)
		start := time.Now()
		for range concurrency {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					t0 := time.Now()
					if err := get(); err != nil {
						errs <- err
						next.Store(int64(n)) // stop the others
						return
					}
					if times != nil {
						times[i] = time.Since(t0)
					}
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		close(errs)
		return elapsed, <-errs
	}
	if _, err := run(concurrency*50, nil); err != nil {
		return ProxyLoad{}, fmt.Errorf("warming up: %w", err)
	}
	times := make(samples, n)
	elapsed, err := run(n, times)
	if err != nil {
		return ProxyLoad{}, err
	}
	return ProxyLoad{Concurrency: concurrency, Requests: n, RPS: round2(float64(n) / elapsed.Seconds()), LatencyUs: micros(times)}, nil
}

// startBenchCaddy runs Caddy with two sites to upstream: "caddy+gate" asks the gate at
// gateAddress about the awake target through forward_auth, "caddy" does not.
func (b *bench) startBenchCaddy(ctx context.Context, gateAddress, ns, upstream string) (map[string]string, func(), error) {
	binary, err := framework.CaddyPath(ctx)
	if err != nil {
		return nil, nil, err
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, nil, err
	}
	caddyfile := framework.CaddyGlobalOptions + fmt.Sprintf(`http://%s {
	forward_auth %s {
		uri /auth?target=%s/deployment/awake
	}
	reverse_proxy %s
}
http://%s {
	reverse_proxy %s
}
`, ports[0], gateAddress, ns, upstream, ports[1], upstream)
	dir, err := os.MkdirTemp(b.cluster.Dir(), "caddy-")
	if err != nil {
		return nil, nil, err
	}
	c, err := framework.StartCaddy(ctx, binary, dir, caddyfile, ports[0])
	if err != nil {
		return nil, nil, err
	}
	return map[string]string{"caddy+gate": "http://" + ports[0] + "/", "caddy": "http://" + ports[1] + "/"}, c.Stop, nil
}

// nginxBinary is $BENCH_NGINX, or the nginx that hack/tools.sh takes from the Debian archive
// (its package has the auth_request module), or nginx on $PATH.
func nginxBinary() (string, error) {
	if p := os.Getenv("BENCH_NGINX"); p != "" {
		return p, nil
	}
	if root, err := localcluster.RepoRoot(); err == nil {
		tools := filepath.Join(root, "hack", "tools.sh")
		if exec.Command("bash", tools, "nginx").Run() == nil {
			if out, err := exec.Command("bash", tools, "path", "nginx").Output(); err == nil {
				return strings.TrimSpace(string(out)), nil
			}
		}
	}
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	return "", errNoNginx
}

// startBenchNginx runs nginx with three sites to upstream: "nginx" without the gate,
// "nginx+gate" asking the gate about the awake target through auth_request, and
// "nginx+gate+cache" doing the same with the gate's 200 cached for nginxCache (one call to the
// gate per cache period; concurrent misses wait for it). The gate answers Cache-Control:
// no-store, which the cached path ignores on purpose.
func (b *bench) startBenchNginx(ctx context.Context, binary, gateAddress, ns, upstream string) (map[string]string, func(), error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, nil, err
	}
	// Workers drop root's rights: the directory must be readable by them.
	dir, err := os.MkdirTemp("", "zerowake-bench-nginx-")
	if err != nil {
		return nil, nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, nil, err
	}
	auth := func(cache string) string {
		return fmt.Sprintf(`		location / {
			auth_request /_gate;
			proxy_pass http://backend;
		}
		location = /_gate {
			internal;
			proxy_pass http://gate%s?target=%s/deployment/awake;
			proxy_pass_request_body off;
			proxy_set_header Content-Length "";
			proxy_set_header Connection "";
			proxy_set_header X-Forwarded-Method $request_method;
%s		}
`, gate.PathAuth, ns, cache)
	}
	cached := fmt.Sprintf(`			proxy_cache gate;
			proxy_cache_key %s/deployment/awake;
			proxy_cache_valid 200 %ds;
			proxy_ignore_headers Cache-Control Expires;
			proxy_cache_lock on;
`, ns, int(nginxCache.Seconds()))
	conf := fmt.Sprintf(`daemon off;
worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	proxy_cache_path %[1]s/cache levels=1 keys_zone=gate:1m max_size=16m inactive=1m;
	proxy_http_version 1.1;
	proxy_set_header Connection "";
	upstream gate { server %[2]s; keepalive 64; }
	upstream backend { server %[3]s; keepalive 64; }
	server {
		listen %[4]s;
		location / { proxy_pass http://backend; }
	}
	server {
		listen %[5]s;
%[6]s	}
	server {
		listen %[7]s;
%[8]s	}
}
`, dir, gateAddress, upstream, ports[0], ports[1], auth(""), ports[2], auth(cached))
	p, err := framework.StartNginx(ctx, binary, dir, conf, ports...)
	if err != nil {
		return nil, nil, err
	}
	stop := func() {
		p.Stop()
		_ = os.RemoveAll(dir)
	}
	return map[string]string{"nginx": "http://" + ports[0] + "/", "nginx+gate": "http://" + ports[1] + "/",
		"nginx+gate+cache": "http://" + ports[2] + "/"}, stop, nil
}

func freePorts(n int) ([]string, error) {
	ports := make([]string, 0, n)
	for len(ports) < n {
		p, err := framework.FreePort()
		if err != nil {
			return nil, err
		}
		if addr := "127.0.0.1:" + strconv.Itoa(p); !slices.Contains(ports, addr) {
			ports = append(ports, addr)
		}
	}
	return ports, nil
}

// loadRows adds the rows of the proxy load runs: Caddy's against the goals, nginx's beside.
func loadRows(g *Gate, add func(metric, value, target string, met *bool)) {
	find := func(path string, c int) (ProxyLoad, bool) {
		for _, l := range g.Load {
			if l.Path == path && l.Concurrency == c {
				return l, true
			}
		}
		return ProxyLoad{}, false
	}
	if len(g.Load) == 0 {
		add("gate.load", "not run", "", nil)
		return
	}
	for _, c := range loadConcurrencies {
		with, ok1 := find("caddy+gate", c)
		without, ok2 := find("caddy", c)
		if !ok1 || !ok2 {
			continue
		}
		ratio := with.RPS / without.RPS
		added := with.LatencyUs.P99 - without.LatencyUs.P99
		add(fmt.Sprintf("gate.load c=%d: Caddy req/s with gate / without (ratio; n=%d each)", c, with.Requests),
			fmt.Sprintf("%.0f / %.0f (%.2f×)", with.RPS, without.RPS, ratio),
			fmt.Sprintf("≥ %.1f×", loadMinRatio), check(ratio >= loadMinRatio))
		add(fmt.Sprintf("gate.load c=%d: Caddy p50/p99 µs with gate / without (added at p99)", c),
			fmt.Sprintf("%.0f/%.0f / %.0f/%.0f (%+.0f)", with.LatencyUs.P50, with.LatencyUs.P99, without.LatencyUs.P50, without.LatencyUs.P99, added),
			fmt.Sprintf("added p99 ≤ %d", loadMaxAddedP99Us), check(added <= loadMaxAddedP99Us))
	}
	if g.NginxSkipped != "" {
		add("gate.load nginx (auth_request, cache)", "not run: "+g.NginxSkipped, "", nil)
		return
	}
	for _, c := range loadConcurrencies {
		none, ok1 := find("nginx", c)
		gated, ok2 := find("nginx+gate", c)
		cached, ok3 := find("nginx+gate+cache", c)
		if !ok1 || !ok2 || !ok3 {
			continue
		}
		add(fmt.Sprintf("gate.load c=%d: nginx req/s no gate / gate / gate cached %s", c, nginxCache),
			fmt.Sprintf("%.0f / %.0f / %.0f", none.RPS, gated.RPS, cached.RPS), "", nil)
		add(fmt.Sprintf("gate.load c=%d: nginx p99 µs no gate / gate / gate cached %s", c, nginxCache),
			fmt.Sprintf("%.0f / %.0f / %.0f", none.LatencyUs.P99, gated.LatencyUs.P99, cached.LatencyUs.P99), "", nil)
	}
}

// errNoNginx is why the nginx paths were not measured.
var errNoNginx = errors.New("no nginx: hack/tools.sh nginx failed (it needs apt-get), none on $PATH and $BENCH_NGINX unset")
