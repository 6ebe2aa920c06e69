package gate

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zerowake/zerowake/e2e/framework"
	"github.com/zerowake/zerowake/gate"
	"github.com/zerowake/zerowake/hack/localcluster"
)

// The proxy configurations in docs/proxies.md that carry a "<!-- tested: NAME -->" comment are
// run here as written, but for the replacements docs/proxies.md lists under "How these
// examples are tested": the addresses, the token, the route's target and, for a target that
// never becomes ready, the route's timeout. Each replaced text must be found, so an edit of the
// document that this test does not know about fails it.

// testedMarker precedes, on its own line, the fenced block a test runs.
const testedMarker = "<!-- tested: %s -->"

// testedExample returns the block marked name in docs/proxies.md. A block marked so in
// README.md must be the same text: the README shows the tested example, not a variant.
func testedExample(t *testing.T, name string) string {
	t.Helper()
	root, err := localcluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	docs := markedBlocks(t, filepath.Join(root, "docs", "proxies.md"), name)
	if len(docs) != 1 {
		t.Fatalf("docs/proxies.md has %d blocks marked %q, want 1", len(docs), fmt.Sprintf(testedMarker, name))
	}
	for _, b := range markedBlocks(t, filepath.Join(root, "README.md"), name) {
		if b != docs[0] {
			t.Errorf("README.md's %s example differs from docs/proxies.md's:\n%s", name, b)
		}
	}
	return docs[0]
}

// markedBlocks returns the contents of the fenced blocks that follow the marker for name.
func markedBlocks(t *testing.T, path, name string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	marker := fmt.Sprintf(testedMarker, name)
	var blocks []string
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != marker {
			continue
		}
		if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "```") {
			t.Fatalf("%s:%d: %s is not followed by a fenced block", path, i+1, marker)
		}
		var b strings.Builder
		for i += 2; i < len(lines) && !strings.HasPrefix(lines[i], "```"); i++ {
			b.WriteString(lines[i] + "\n")
		}
		blocks = append(blocks, b.String())
	}
	return blocks
}

// substitute replaces each pair's first text with its second, failing when one is missing.
func substitute(t *testing.T, block string, pairs ...string) string {
	t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(block, pairs[i]) {
			t.Fatalf("the example no longer contains %q, which the test replaces:\n%s", pairs[i], block)
		}
		block = strings.ReplaceAll(block, pairs[i], pairs[i+1])
	}
	return block
}

// exampleProxy starts a documented proxy configuration for a route to target (ns/kind/name)
// with the route's timeout, and returns the site's URL.
type exampleProxy func(t *testing.T, target, timeout string) string

// The documented route: its target and timeout.
const (
	docTarget  = "shop/deployment/web"
	docTimeout = "timeout=30s"
)

// checkDocumentedExample runs the cases docs/proxies.md promises for a proxy: a request for an
// idle target is held, woken and reaches the backend; the next one passes as awake; a
// workload that is not opted in is refused 403; a target that never becomes ready is answered
// 503 with Retry-After. Every answer that does not pass carries X-Zerowake-Outcome to the
// client. It returns the timeout reply for proxy-specific checks.
func checkDocumentedExample(t *testing.T, start exampleProxy) reply {
	ns := localcluster.NewNamespace(t, cluster)
	createIdle(t, ns, "web", true, false)
	createIdle(t, ns, "stuck", true, true)
	createIdle(t, ns, "private", false, false)
	answers := func(outcome string) float64 {
		n, err := gateProc.Metric("zerowake_gate_answers_total", "outcome", outcome)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	site := start(t, ns+"/deployment/web", "30s")
	hits, woken := backendHits.Load(), answers("woken")
	if r := get(t, site+"/hello"); r.status != http.StatusOK || r.body != "backend: GET /hello\n" {
		t.Fatalf("held request: got %d %q %v, want the backend's answer\ngate log:\n%s", r.status, r.body, r.header, gateProc.Tail(10))
	}
	if n := backendHits.Load() - hits; n != 1 {
		t.Errorf("the backend saw %d requests, want 1", n)
	}
	if n := answers("woken") - woken; n != 1 {
		t.Errorf("the gate answered %v calls woken, want 1 (the request was not held for the wake)", n)
	}
	if replicas, ready := deploymentReady(t, ns, "web"); replicas != 1 || ready != 1 {
		t.Errorf("Deployment at %d replicas, %d ready; want 1 and 1", replicas, ready)
	}

	awake := answers("awake")
	if r := get(t, site+"/again"); r.status != http.StatusOK || r.body != "backend: GET /again\n" {
		t.Fatalf("awake request: got %d %q %v", r.status, r.body, r.header)
	}
	if n := answers("awake") - awake; n != 1 {
		t.Errorf("the gate answered %v calls awake, want 1", n)
	}

	hits = backendHits.Load()
	refused := get(t, start(t, ns+"/deployment/private", "30s")+"/")
	if refused.status != http.StatusForbidden || refused.header.Get(gate.HeaderOutcome) != "refused" {
		t.Errorf("not opted in: got %d %v %q, want 403 with %s: refused", refused.status, refused.header, refused.body, gate.HeaderOutcome)
	}

	// The gate's --retry-after is 3s (TestMain); the route's timeout is 3s here.
	timedOut := get(t, start(t, ns+"/deployment/stuck", "3s")+"/")
	if timedOut.status != http.StatusServiceUnavailable || timedOut.header.Get(gate.HeaderOutcome) != "timeout" ||
		timedOut.header.Get("Retry-After") != "3" {
		t.Errorf("never ready: got %d %v %q, want 503 with %s: timeout and Retry-After: 3",
			timedOut.status, timedOut.header, timedOut.body, gate.HeaderOutcome)
	}
	if backendHits.Load() != hits {
		t.Error("a request that was not let through reached the backend")
	}
	return timedOut
}

// TestDocumentedCaddyExample runs docs/proxies.md's Caddyfile.
func TestDocumentedCaddyExample(t *testing.T) {
	example := testedExample(t, "caddy")
	t.Setenv("ZEROWAKE_GATE_TOKEN", gateToken) // the example reads it with {env.ZEROWAKE_GATE_TOKEN}
	start := func(t *testing.T, target, timeout string) string {
		port, err := framework.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		site := "127.0.0.1:" + strconv.Itoa(port)
		// The admin endpoint would take a fixed port; automatic HTTPS would want certificates.
		caddyfile := "{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n}\n" + substitute(t, example,
			"web.example.com {", "http://"+site+" {",
			"zerowake-gate.zerowake-system.svc:8000", gateAddress,
			"web.shop.svc:80", strings.TrimPrefix(backend.URL, "http://"),
			docTarget, target,
			docTimeout, "timeout="+timeout)
		c, err := framework.StartCaddy(context.Background(), caddy, t.TempDir(), caddyfile, site)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Stop)
		return "http://" + site
	}
	r := checkDocumentedExample(t, start)
	// Caddy passes the gate's own answer; the test's gate exposes details.
	if !strings.Contains(r.body, "not ready within 3s") {
		t.Errorf("never ready: body %q, want the gate's message", r.body)
	}
}

// TestDocumentedNginxExample runs docs/proxies.md's nginx configuration with Debian's nginx
// (hack/tools.sh nginx), in particular its 503s, which nginx turns into 500s that the
// configuration must answer with the gate's outcome, reason and Retry-After.
func TestDocumentedNginxExample(t *testing.T) {
	example := testedExample(t, "nginx")
	binary := nginxPath(t)
	start := func(t *testing.T, target, timeout string) string {
		port, err := framework.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		site := "127.0.0.1:" + strconv.Itoa(port)
		server := substitute(t, example,
			"listen 80;", "listen "+site+";",
			"zerowake-gate.zerowake-system.svc.cluster.local:8000", gateAddress,
			"web.shop.svc.cluster.local", strings.TrimPrefix(backend.URL, "http://"),
			`"<token>"`, `"`+gateToken+`"`,
			docTarget, target,
			docTimeout, "timeout="+timeout)
		startNginx(t, binary, server, site)
		return "http://" + site
	}
	r := checkDocumentedExample(t, start)
	if got := r.header.Get(gate.HeaderReason); got != "NotReadyYet" {
		t.Errorf("never ready: %s %q, want NotReadyYet (the test's gate exposes details)", gate.HeaderReason, got)
	}
	// The body is the example's text for the outcome, chosen by the outcome nginx kept.
	text := regexp.MustCompile(`(?m)^\s*timeout\s+"([^"]+)";`).FindStringSubmatch(example)
	if text == nil {
		t.Fatal("the nginx example has no text for the timeout outcome")
	}
	if r.body != text[1]+"\n" {
		t.Errorf("never ready: body %q, want %q", r.body, text[1]+"\n")
	}
}

// nginxPath returns the nginx binary hack/tools.sh fetches from the Debian archive, or skips
// the test on a machine without apt-get.
func nginxPath(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("hack/tools.sh takes nginx from the Debian archive, and this machine has no %s", tool)
		}
	}
	root, err := localcluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	tools := filepath.Join(root, "hack", "tools.sh")
	if out, err := exec.Command("bash", tools, "nginx").CombinedOutput(); err != nil {
		t.Fatalf("hack/tools.sh nginx: %v\n%s", err, out)
	}
	out, err := exec.Command("bash", tools, "path", "nginx").Output()
	if err != nil {
		t.Fatalf("hack/tools.sh path nginx: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// startNginx runs nginx in the foreground, as one process, with server (the example: http-level
// directives and a server block) inside an http block whose pid, logs and temporary files stay
// in a directory of the test's, and waits until it listens on address.
func startNginx(t *testing.T, binary, server, address string) {
	t.Helper()
	dir := t.TempDir()
	conf := "daemon off;\nmaster_process off;\npid nginx.pid;\nerror_log stderr notice;\nevents {}\nhttp {\n" +
		"access_log off;\nclient_body_temp_path tmp/body;\nproxy_temp_path tmp/proxy;\n" +
		"fastcgi_temp_path tmp/fastcgi;\nuwsgi_temp_path tmp/uwsgi;\nscgi_temp_path tmp/scgi;\n" +
		server + "}\n"
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "nginx.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "-p", dir+"/", "-c", "nginx.conf", "-e", "stderr")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logFile.Close(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("nginx log:\n%s", tail(logPath, 20))
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", address, time.Second)
		if err == nil {
			conn.Close()
			return
		}
		select {
		case <-done:
			t.Fatalf("nginx exited:\n%s", tail(logPath, 20))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx not listening on %s after 20s:\n%s", address, tail(logPath, 20))
		}
	}
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		lines = append(lines, s.Text())
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
