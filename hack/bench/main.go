// Command bench measures the zerowake controller on a local control plane against the floor
// the API server itself sets, in the same run: `go run ./hack/bench` (or `make bench`).
//
// It starts its own control plane (hack/localcluster), installs crds/ and deploy/, builds the
// controller and runs it as a process with the ServiceAccount identity deploy/ binds, then runs
// its scenarios: floor (with no controller: the one-PATCH floor, a /scale PATCH per fresh target
// timed from being sent until seen, and the three requests a ScaleRequest-driven wake makes),
// single (sequential wakes), burst (for each size, 100 and 1,000 and 10,000, or 100 and 500
// quick: the one-PATCH floor of that many targets at once, then as many wakes at once, default
// flags), herd (10,000 Wake calls for one target through the wake client), sustained (readiness
// seen -> Ready written while signals keep arriving), gate (the wake gate and its cost behind
// Caddy and nginx, see gate.go and gateload.go), endpoints (the gate among 10,000 EndpointSlices),
// sleep (activity writes of an active target, writes per sleep and wake cycle, time from
// idle-after to zero replicas; see sleep.go), footprint (memory and idle writes), and coldstart
// (on a real-node cluster of its own: a client's request through Caddy and the gate to an app at
// zero, against PATCH /scale by hand, see coldstart.go; its plot goes to BASENAME-coldstart.png).
// Single and burst figures run from the signal being sent and are given as ratios to the
// one-PATCH floor. It prints a table, writes
// JSON to $BENCH_OUT (default bench-results.json at the repository root) and a PNG with the
// latency CDFs of scenario 2 and the floors next to it. BENCH_QUICK=1 takes fewer samples.
// Every event is timestamped from watches as it arrives; nothing is timed by polling.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/scale"

	"github.com/zerowake/zerowake/e2e/framework"
	"github.com/zerowake/zerowake/generated/clientset/versioned"
	"github.com/zerowake/zerowake/hack/localcluster"
)

type config struct {
	out        string
	quick      bool
	profileDir string
	binary     string
	only       map[string]bool
	extraArgs  []string

	floorN, singleN        int
	burstSizes             []int
	herdCalls, herdWorkers int
	fpSRs, fpDeploys       int
	idleWindow, settle     time.Duration
}

type bench struct {
	cfg     config
	root    string
	cluster *localcluster.Cluster
	admin   *rest.Config
	kube    kubernetes.Interface
	zw      versioned.Interface
	scales  scale.ScalesGetter

	binary   string
	ctrlCfg  *rest.Config
	ctrlArgs []string
	ctrl     *framework.Controller
	ctrlN    int
	holder   string

	single      singleSamples
	floorTs     floorSamples
	coldSamples *coldStartSamples
	results     Results
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	root, err := localcluster.RepoRoot()
	if err != nil {
		return err
	}
	cfg := config{only: map[string]bool{}}
	defOut := os.Getenv("BENCH_OUT")
	if defOut == "" {
		defOut = filepath.Join(root, "bench-results.json")
	}
	quick, _ := strconv.ParseBool(os.Getenv("BENCH_QUICK"))
	var only, extra, bursts string
	flag.StringVar(&cfg.out, "out", defOut, "JSON output path ($BENCH_OUT); the PNG plot goes next to it with the same basename.")
	flag.BoolVar(&cfg.quick, "quick", quick, "Fewer samples, same scenarios ($BENCH_QUICK=1).")
	flag.StringVar(&cfg.profileDir, "profile-dir", "", "If set, save controller CPU profiles of scenarios 2 and 3 and heap profiles of scenarios 3 and 5 here.")
	flag.StringVar(&only, "only", os.Getenv("BENCH_ONLY"), "Comma-separated scenarios to run (floor,single,herd,sustained,gate,endpoints,sleep,burst,footprint,coldstart; $BENCH_ONLY); empty means all.")
	flag.StringVar(&extra, "controller-args", "", "Extra controller flags, space-separated (for experiments; the published run uses none).")
	flag.StringVar(&bursts, "bursts", "", "Comma-separated burst sizes, each run after its one-PATCH floor (default 100,500 quick, 100,1000,10000 full).")
	flag.StringVar(&cfg.binary, "controller-binary", "", "Run this controller binary instead of building cmd/zerowake-controller (for experiments).")
	flag.Parse()
	for _, s := range strings.Split(only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.only[s] = true
		}
	}
	cfg.extraArgs = strings.Fields(extra)
	if cfg.profileDir != "" {
		if err := os.MkdirAll(cfg.profileDir, 0o755); err != nil {
			return err
		}
	}
	if cfg.quick {
		cfg.floorN, cfg.singleN, cfg.burstSizes = 60, 60, []int{100, 500}
		cfg.herdCalls, cfg.herdWorkers = 10000, 100
		cfg.fpSRs, cfg.fpDeploys = 10000, 10000
		cfg.idleWindow, cfg.settle = 30*time.Second, 3*time.Second
	} else {
		cfg.floorN, cfg.singleN, cfg.burstSizes = 200, 200, []int{100, 1000, 10000}
		cfg.herdCalls, cfg.herdWorkers = 10000, 100
		cfg.fpSRs, cfg.fpDeploys = 10000, 10000
		// Long enough for the runtime to return most of what the start-up list freed to the
		// OS, so that RSS readings are steady.
		cfg.idleWindow, cfg.settle = 60*time.Second, 30*time.Second
	}
	if bursts != "" {
		cfg.burstSizes = nil
		for _, f := range strings.Split(bursts, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				return fmt.Errorf("-bursts: %q is not a burst size", f)
			}
			cfg.burstSizes = append(cfg.burstSizes, n)
		}
	}
	if v := os.Getenv("BENCH_FOOTPRINT_N"); v != "" { // for development only
		n, err := strconv.Atoi(v)
		if err != nil {
			return err
		}
		cfg.fpSRs, cfg.fpDeploys = n, n
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b := &bench{cfg: cfg, root: root}
	begin := time.Now()
	b.results.Env = collectEnv(root, cfg)
	logf("load average at start: %s", b.results.Env.LoadAvgStart)

	// The cold starts run on a real-node cluster of their own; the other scenarios share this one.
	if !b.onlyColdStart() {
		if err := b.setup(ctx); err != nil {
			b.teardown()
			return err
		}
	}
	err = b.scenarios(ctx)
	b.teardown()
	if err != nil {
		return err
	}
	b.results.Env.LoadAvgEnd = loadAvg()
	b.results.Env.DurationS = round2(time.Since(begin).Seconds())

	printTable(os.Stdout, &b.results)
	data, err := json.MarshalIndent(b.results, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(cfg.out, append(data, '\n'), 0o644); err != nil {
		return err
	}
	png := strings.TrimSuffix(cfg.out, filepath.Ext(cfg.out)) + ".png"
	if b.onlyColdStart() {
		png = "no single-wake plot"
	} else {
		if err := writePlot(png, &b.single, &b.floorTs, &b.results); err != nil {
			return fmt.Errorf("plot: %w", err)
		}
	}
	if b.coldSamples != nil {
		coldPNG := strings.TrimSuffix(cfg.out, filepath.Ext(cfg.out)) + "-coldstart.png"
		if err := writeColdStartPlot(coldPNG, b.coldSamples, &b.results); err != nil {
			return fmt.Errorf("plot: %w", err)
		}
		logf("wrote %s", coldPNG)
	}
	logf("wrote %s and %s in %s (load average at end: %s)", cfg.out, png, time.Since(begin).Round(time.Second), b.results.Env.LoadAvgEnd)
	return nil
}

func (b *bench) want(scenario string) bool { return len(b.cfg.only) == 0 || b.cfg.only[scenario] }

// onlyColdStart reports whether the cold starts are the only scenario asked for.
func (b *bench) onlyColdStart() bool { return len(b.cfg.only) == 1 && b.cfg.only["coldstart"] }

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: %s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func (b *bench) setup(ctx context.Context) error {
	t := time.Now()
	// A kwok node holds 10,000 pods: the largest burst's floor and its wake run 2 × its
	// targets at once, besides the other scenarios' pods.
	largest := slices.Max(append([]int{0}, b.cfg.burstSizes...))
	nodes := (2*largest+2000)/10000 + 1
	cluster, err := localcluster.Start(ctx, localcluster.Options{Log: os.Stderr, Timeout: 120 * time.Second, Nodes: nodes})
	if err != nil {
		return err
	}
	b.cluster = cluster
	for _, dir := range []string{"crds", "deploy"} {
		if _, err := cluster.Kubectl(ctx, "apply", "--server-side", "-k", filepath.Join(b.root, dir)); err != nil {
			return err
		}
	}
	if _, err := cluster.Kubectl(ctx, "wait", "--for=condition=Established", "crd/scalerequests.zerowake.dev", "--timeout=60s"); err != nil {
		return err
	}

	// The benchmark's own clients are not rate limited, and speak protobuf where they can,
	// so that they cost the shared cores as little as possible.
	b.admin = cluster.RESTConfig()
	b.admin.QPS, b.admin.Burst = 100000, 100000
	proto := rest.CopyConfig(b.admin)
	proto.ContentType = "application/vnd.kubernetes.protobuf"
	if b.kube, err = kubernetes.NewForConfig(proto); err != nil {
		return err
	}
	if b.zw, err = versioned.NewForConfig(b.admin); err != nil {
		return err
	}
	disc, err := kubernetes.NewForConfig(b.admin)
	if err != nil {
		return err
	}
	cached := memory.NewMemCacheClient(disc.Discovery())
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(cached)
	if b.scales, err = scale.NewForConfig(b.admin, mapper, dynamic.LegacyAPIPathResolverFunc, scale.NewDiscoveryScaleKindResolver(cached)); err != nil {
		return err
	}
	if v, err := disc.Discovery().ServerVersion(); err == nil {
		b.results.Env.Kubernetes = v.GitVersion
	}

	if b.binary = b.cfg.binary; b.binary == "" {
		if b.binary, err = framework.BuildController(ctx, cluster.Dir()); err != nil {
			return err
		}
	}
	if b.ctrlCfg, err = cluster.ServiceAccountConfig(ctx, "zerowake-system", "zerowake-controller"); err != nil {
		return err
	}
	// Default flags, except: log at the default level (the framework asks for debug), serve
	// pprof on the operations address (profiles, and a forced GC before memory readings),
	// and --ready-timeout, raised to the largest burst's own timeout: this control plane needs
	// ~9 minutes to make 10,000 kwok pods ready with no controller at all, and the default 5m
	// would rightly fail every request of that burst with ReadyTimeout.
	b.ctrlArgs = append([]string{"--log-level=info", "--enable-pprof", "--ready-timeout=" + burstTimeout(largest).String()}, b.cfg.extraArgs...)
	b.results.Env.ControllerFlags = append([]string{"--kubeconfig=<ServiceAccount zerowake-system/zerowake-controller>",
		"--ops-address=127.0.0.1:<port>", "--log-format=json"}, b.ctrlArgs...)
	logf("setup done in %s", time.Since(t).Round(time.Millisecond))
	return nil
}

func (b *bench) teardown() {
	if b.ctrl != nil {
		b.ctrl.Stop(20 * time.Second)
		b.ctrl = nil
	}
	if b.cluster != nil {
		if err := b.cluster.Stop(); err != nil {
			logf("stopping the control plane: %v", err)
		}
	}
}

func (b *bench) scenarios(ctx context.Context) error {
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"floor", b.floor},
		{"single", b.runSingle},
		{"herd", b.herd},
		{"sustained", b.sustained},
		{"gate", b.gateScenario},
		{"endpoints", b.endpointsScenario},
		{"sleep", b.sleepScenario},
		// After the latency scenarios: the control plane goes on deleting the largest burst's
		// pods for minutes after it, which only the footprint's memory readings can ignore.
		{"burst", b.burst},
		// Last: it leaves thousands of new Deployments for the controller manager to work
		// through (a ReplicaSet each, minutes at its API rate), behind which any later
		// scenario's target would wait to become ready.
		{"footprint", b.footprint},
		// On a real-node cluster of its own, started and stopped by the scenario.
		{"coldstart", b.coldStart},
	}
	for _, s := range steps {
		if !b.want(s.name) {
			continue
		}
		t := time.Now()
		logf("scenario %s: starting (load average %s)", s.name, loadAvg())
		if s.name != "floor" && s.name != "coldstart" && b.ctrl == nil {
			if err := b.startController(ctx); err != nil {
				return err
			}
		}
		if err := s.fn(ctx); err != nil {
			if b.ctrl != nil {
				fmt.Fprintf(os.Stderr, "controller log tail:\n%s\n", b.ctrl.Tail(20))
			}
			return fmt.Errorf("scenario %s: %w", s.name, err)
		}
		logf("scenario %s: done in %s", s.name, time.Since(t).Round(time.Millisecond))
	}
	return nil
}
