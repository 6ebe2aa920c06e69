// Command zerowake-gate answers proxies' forward-auth calls (nginx auth_request, Traefik
// forwardAuth, Caddy forward_auth, Envoy ext_authz) for services that may be scaled to zero:
// it lets a request through when its targets are up, and otherwise wakes them through
// ScaleRequests and holds the request until they are ready. It is an internal service for
// proxies; never expose it to clients.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/klog/v2"

	"github.com/zerowake/zerowake/activity"
	"github.com/zerowake/zerowake/gate"
	"github.com/zerowake/zerowake/internal/apicount"
	"github.com/zerowake/zerowake/internal/logging"
	"github.com/zerowake/zerowake/internal/ops"
	"github.com/zerowake/zerowake/internal/version"
	"github.com/zerowake/zerowake/wake"
)

type options struct {
	kubeconfig string
	// namespaces served; nil with allNamespaces.
	namespaces    []string
	allNamespaces bool
	tokenFile     string
	defaultMax    int
	address       string
	opsAddress    string
	window        time.Duration
	gate          gate.Config
	shutdown      gate.Leaving
	qps           float64
	burst         int
	logLevel      string
	logFormat     string
	pprof         bool
	printVersion  bool
	// endpoints bound the Services whose EndpointSlices the gate follows.
	endpoints gate.EndpointWatcherOptions
	// membershipNamespace holds the gate's membership Lease; empty: no membership.
	membershipNamespace string
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("zerowake-gate", flag.ContinueOnError)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "Path to a kubeconfig; empty means in-cluster configuration (or $KUBECONFIG when set).")
	var namespaces, namespace string
	fs.StringVar(&namespaces, "namespaces", "", "Comma-separated namespaces whose targets the gate serves (each needs only a RoleBinding); a target elsewhere is refused with no write. Required unless --all-namespaces.")
	fs.StringVar(&namespace, "namespace", "", "Deprecated: use --namespaces (one namespace).")
	fs.BoolVar(&o.allNamespaces, "all-namespaces", false, "Serve targets in every namespace (needs a ClusterRoleBinding).")
	fs.StringVar(&o.tokenFile, "auth-token-file", "", "File holding the token proxies must send (header "+gate.HeaderToken+", or token= in the /auth URL); calls without it get 401. Empty: no token is asked for.")
	fs.IntVar(&o.defaultMax, "default-max-replicas", gate.DefaultMaxReplicas, "Replicas a route may ask for a workload whose owner set no "+gate.MaxReplicasAnnotation+" annotation; equal to the controller's --default-max-replicas.")
	fs.BoolVar(&o.gate.ExposeDetails, "expose-details", false, "Send clients the reason (X-Zerowake-Reason) and the detailed message of answers that do not pass; by default they get a fixed text per outcome and the detail is only logged.")
	fs.StringVar(&o.gate.MethodHeader, "method-header", gate.DefaultMethodHeader, "Header in which the proxy passes the original method on /auth (Traefik, Caddy: X-Forwarded-Method; nginx: the one its configuration sets, e.g. X-Original-Method). The proxy must set it, not copy it from the client.")
	fs.StringVar(&o.address, "address", ":8000", "Address serving the forward-auth calls (/auth and /ext_authz/).")
	fs.StringVar(&o.opsAddress, "ops-address", "", "Address (e.g. :8080) serving /metrics, /healthz and /readyz; empty disables it.")
	fs.DurationVar(&o.window, "window", wake.DefaultWindow, "How long a signal stays fresh; set it to the controller's --rescale-duration.")
	fs.DurationVar(&o.gate.Timeout, "timeout", gate.DefaultTimeout, "How long a call is held when its route sets no timeout.")
	fs.DurationVar(&o.gate.MaxTimeout, "max-timeout", gate.DefaultMaxTimeout, "The longest timeout a route may ask for.")
	fs.DurationVar(&o.gate.RetryAfter, "retry-after", gate.DefaultRetryAfter, "Retry-After sent with 503 answers; also the starting-up page's refresh interval.")
	fs.BoolVar(&o.gate.Page, "page", false, "Answer browsers' page loads with a self-refreshing starting-up page unless the route says page=false.")
	fs.IntVar(&o.gate.MaxHeldPerTarget, "max-held-per-target", gate.DefaultMaxHeldPerTarget, "Calls held at once for one target; more get 503 at once. Negative: no cap.")
	fs.IntVar(&o.gate.MaxHeld, "max-held", gate.DefaultMaxHeld, "Calls held at once for all targets together (about 10 KiB each, plus the HTTP connection's buffers); more get 503 at once. Negative: no cap.")
	fs.IntVar(&o.gate.MaxTargetsInRoute, "max-targets-in-route", gate.DefaultMaxTargetsInRoute, "Targets one route may name.")
	fs.IntVar(&o.endpoints.MaxServices, "max-watched-services", gate.DefaultMaxWatchedServices, "Services (named by routes' service=) whose EndpointSlices the gate follows at once, one label-selected watch each; a route naming one more gets 503 until one goes unused.")
	fs.DurationVar(&o.endpoints.Idle, "service-idle", gate.DefaultServiceIdle, "How long the gate still follows a Service's EndpointSlices after the last call whose route named it.")
	fs.DurationVar(&o.shutdown.Delay, "shutdown-delay", gate.DefaultShutdownDelay, "On SIGTERM, how long the gate keeps answering every call, new ones included, with /readyz failing, before it closes its listener: the time the proxies need to stop sending it calls (endpoint removal, health checks).")
	fs.DurationVar(&o.shutdown.Grace, "shutdown-grace", gate.DefaultShutdownGrace, "After the shutdown delay, how long held calls may still become ready before they are answered 503. A second SIGTERM or interrupt skips what is left of the delay and the grace.")
	fs.Float64Var(&o.qps, "kube-api-qps", 50, "Steady requests per second to the API server (only ScaleRequest writes and the informer's watch).")
	fs.IntVar(&o.burst, "kube-api-burst", 100, "Burst of requests to the API server.")
	fs.StringVar(&o.logLevel, "log-level", "info", "Minimum log level: debug, info, warn or error.")
	fs.StringVar(&o.logFormat, "log-format", "json", "Log format: json or console.")
	fs.BoolVar(&o.pprof, "enable-pprof", false, "Also serve Go profiles under /debug/pprof/ on --ops-address.")
	fs.BoolVar(&o.printVersion, "version", false, "Print the version and exit.")
	fs.StringVar(&o.membershipNamespace, "membership-namespace", os.Getenv("POD_NAMESPACE"), "Namespace of the gate's membership Lease, the controller's --gate-namespace (default $POD_NAMESPACE). A gate without one must not front workloads that sleep when idle: the controller would not wait for it before scaling them to zero. Empty: none.")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if o.printVersion {
		// Answered before the checks, so that --version alone works.
		return o, nil
	}
	for _, list := range []string{namespaces, namespace} {
		for ns := range strings.SplitSeq(list, ",") {
			if ns = strings.TrimSpace(ns); ns != "" && !slices.Contains(o.namespaces, ns) {
				o.namespaces = append(o.namespaces, ns)
			}
		}
	}
	switch {
	case o.allNamespaces && len(o.namespaces) > 0:
		return nil, errors.New("--all-namespaces and --namespaces exclude each other")
	case !o.allNamespaces && len(o.namespaces) == 0:
		return nil, errors.New("name the namespaces to serve with --namespaces=a,b (or serve every namespace with --all-namespaces)")
	case o.defaultMax < 1 || o.defaultMax > 1000:
		return nil, fmt.Errorf("--default-max-replicas must be 1..1000, got %d", o.defaultMax)
	}
	switch {
	case o.window <= 0:
		return nil, fmt.Errorf("--window must be positive, got %s", o.window)
	case o.gate.Timeout <= 0 || o.gate.MaxTimeout <= 0 || o.gate.RetryAfter <= 0:
		return nil, errors.New("--timeout, --max-timeout and --retry-after must be positive")
	case o.gate.MaxHeldPerTarget == 0 || o.gate.MaxHeld == 0:
		return nil, errors.New("--max-held-per-target and --max-held must not be 0 (negative means no cap)")
	case o.endpoints.MaxServices < 1 || o.endpoints.Idle <= 0:
		return nil, errors.New("--max-watched-services and --service-idle must be positive")
	case o.qps <= 0 || o.burst < 1:
		return nil, errors.New("--kube-api-qps and --kube-api-burst must be positive")
	case o.shutdown.Delay < 0 || o.shutdown.Grace < 0:
		return nil, errors.New("--shutdown-delay and --shutdown-grace must not be negative")
	}
	return o, nil
}

func main() {
	opts, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "zerowake-gate:", err)
		os.Exit(2)
	}
	if opts.printVersion {
		fmt.Println("zerowake-gate", version.Get())
		os.Exit(0)
	}
	logger, flush, err := logging.New(opts.logLevel, opts.logFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "zerowake-gate:", err)
		os.Exit(2)
	}
	logger.Info("Starting zerowake-gate", "version", version.Get())
	ctx, hurry := stopSignals()
	ctx = klog.NewContext(ctx, logger)
	err = run(ctx, hurry, opts)
	if err != nil {
		logger.Error(err, "Gate failed")
	}
	flush()
	if err != nil {
		os.Exit(1)
	}
}

// stopSignals returns a context that ends on the first SIGTERM or interrupt, and a channel
// closed on the second (the gate then leaves without waiting out its delay and grace); a third
// ends the process at once.
func stopSignals() (context.Context, <-chan struct{}) {
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, os.Interrupt)
	ctx, stop := context.WithCancel(context.Background())
	hurry := make(chan struct{})
	go func() {
		<-signals
		stop()
		<-signals
		close(hurry)
		signal.Reset(syscall.SIGTERM, os.Interrupt)
	}()
	return ctx, hurry
}

// run serves until ctx ends, then leaves as opts.shutdown says; hurry cuts that short.
func run(ctx context.Context, hurry <-chan struct{}, opts *options) error {
	logger := klog.FromContext(ctx)
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	config, err := ops.RESTConfig(opts.kubeconfig)
	if err != nil {
		return err
	}
	config.QPS, config.Burst = float32(opts.qps), opts.burst
	config.UserAgent = "zerowake-gate"
	config.Wrap(apicount.Transport(registry, "gate"))
	if opts.tokenFile != "" {
		token, err := os.ReadFile(opts.tokenFile)
		if err != nil {
			return fmt.Errorf("--auth-token-file: %w", err)
		}
		if opts.gate.AuthToken = strings.TrimSpace(string(token)); opts.gate.AuthToken == "" {
			return errors.New("--auth-token-file: the file is empty")
		}
	} else {
		logger.Info("No --auth-token-file: any caller that reaches the gate is served; restrict who can reach it")
	}
	clientNamespaces := opts.namespaces
	if opts.allNamespaces {
		clientNamespaces = []string{""}
	}
	leaseKube, err := kubernetes.NewForConfig(config)
	if err != nil {
		return err
	}
	var membership *gate.Membership
	if opts.membershipNamespace != "" {
		hostname, _ := os.Hostname()
		membership = gate.NewMembership(leaseKube.CoordinationV1(), opts.membershipNamespace,
			"zerowake-gate-"+hostname+"-"+uuid.NewString()[:8], logger)
		opts.gate.Fence = membership
	}
	recorders := activityRecorders{}
	clients := make([]*wake.Client, 0, len(clientNamespaces))
	for _, ns := range clientNamespaces {
		recorder := activity.NewRecorder(leaseKube, activity.RecorderOptions{Namespace: ns, Identity: "zerowake-gate"})
		recorders[ns] = recorder
		wopts := wake.Options{
			Namespace: ns, Window: opts.window, FieldManager: "zerowake-gate",
			Labels:   map[string]string{"app.kubernetes.io/managed-by": "zerowake-gate"},
			Activity: recorder,
		}
		if membership != nil {
			wopts.OnChange = membership.Observe
		}
		client, err := wake.NewForConfig(config, wopts)
		if err != nil {
			return err
		}
		clients = append(clients, client)
	}
	dyn, err := dynamic.NewForConfig(config)
	if err != nil {
		return err
	}
	disco, err := discovery.NewDiscoveryClientForConfig(config)
	if err != nil {
		return err
	}
	// Only the kinds routes name are resolved and followed, on first use.
	owners := gate.NewInventoryOwners(dyn, restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco)),
		opts.namespaces, int32(opts.defaultMax))
	defer owners.Stop()
	opts.gate.Owners = owners
	// EndpointSlices are read through protobuf; only the Services routes name are followed.
	sliceConfig := rest.CopyConfig(config)
	sliceConfig.ContentType = "application/vnd.kubernetes.protobuf"
	kube, err := kubernetes.NewForConfig(sliceConfig)
	if err != nil {
		return err
	}
	opts.endpoints.Namespaces, opts.endpoints.Registerer = opts.namespaces, registry
	endpoints := gate.NewEndpointWatcher(kube, opts.endpoints)
	defer endpoints.Stop()
	opts.gate.Endpoints = endpoints

	// The wake clients stop answering held calls when the grace ends.
	stopClients := func() {
		for _, c := range clients {
			c.Stop()
		}
		endpoints.Stop() // calls waiting on a Service's slices are answered 503 too
	}
	opts.shutdown.Abandon = stopClients
	server := gate.NewServer(opts.shutdown, logger)
	if opts.opsAddress != "" {
		// Ready once the ScaleRequest cache has synced, so a Service sends no calls to a gate
		// that would have to guess, and no longer from the stop signal on. The operations
		// server outlives ctx: /readyz must answer "not ready" while the gate still serves.
		opsCtx, stopOps := context.WithCancel(context.WithoutCancel(ctx))
		defer stopOps()
		if err := ops.Serve(opsCtx, opts.opsAddress, registry, nil, server.Ready, "not serving: starting or shutting down", opts.pprof); err != nil {
			return err
		}
	}
	// The client's own context outlives ctx by the grace period, so held calls can still see
	// their targets become ready while the server drains.
	clientCtx, stopClient := context.WithCancel(context.WithoutCancel(ctx))
	defer stopClient()
	var waker gate.Waker
	if opts.allNamespaces {
		waker = clients[0]
	} else {
		byNamespace := gate.NamespaceWakers{}
		for i, ns := range opts.namespaces {
			byNamespace[ns] = clients[i]
		}
		waker = byNamespace
	}
	defer stopClients()
	for _, c := range clients {
		if err := c.Start(clientCtx); err != nil {
			return err
		}
	}
	for _, r := range recorders {
		if err := r.Start(clientCtx); err != nil {
			return err
		}
		defer r.Stop()
	}
	opts.gate.Activity = recorders
	if membership != nil {
		// Renewed until the clients stop: a gate that still answers held calls is a member.
		membershipDone := make(chan struct{})
		go func() {
			defer close(membershipDone)
			membership.Run(clientCtx)
		}()
		defer func() {
			stopClient()
			<-membershipDone
		}()
	}

	g := gate.New(waker, opts.gate, gate.NewMetrics(registry), logger)
	listener, err := net.Listen("tcp", opts.address)
	if err != nil {
		return fmt.Errorf("--address: %w", err)
	}
	logger.Info("Serving forward-auth calls", "address", listener.Addr().String(), "namespaces", opts.namespaces,
		"allNamespaces", opts.allNamespaces, "token", opts.gate.AuthToken != "")
	return server.Serve(ctx, hurry, listener, g.Handler())
}

// activityRecorders records activity through the recorder of the target's namespace (key ""
// when the gate serves all namespaces).
type activityRecorders map[string]*activity.Recorder

func (r activityRecorders) Touch(namespace, kind, name string) {
	rec, ok := r[namespace]
	if !ok {
		rec = r[""]
	}
	rec.Touch(namespace, kind, name)
}
