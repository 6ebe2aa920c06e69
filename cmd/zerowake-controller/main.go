// Command zerowake-controller scales idle workloads up from zero when a resolver signals demand
// by writing a ScaleRequest, and reports progress in the ScaleRequest's status.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/scale"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/zerowake/zerowake/activity"
	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/controller"
	"github.com/zerowake/zerowake/generated/clientset/versioned"
	zerowakescheme "github.com/zerowake/zerowake/generated/clientset/versioned/scheme"
	"github.com/zerowake/zerowake/generated/informers/externalversions"
	informers "github.com/zerowake/zerowake/generated/informers/externalversions/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/internal/apicount"
	"github.com/zerowake/zerowake/internal/logging"
	"github.com/zerowake/zerowake/internal/ops"
	"github.com/zerowake/zerowake/internal/version"
	"github.com/zerowake/zerowake/scaling"
)

type options struct {
	kubeconfig      string
	namespaces      string
	workers         int
	rescaleDuration time.Duration
	readyTimeout    time.Duration
	allowedKinds    string
	requireOptIn    bool
	defaultMaxRepl  int
	qps             float64
	burst           int
	scaleQPS        float64
	scaleBurst      int

	leaderElect        bool
	leaseName          string
	leaseNamespace     string
	leaseDuration      time.Duration
	leaseRenewDeadline time.Duration
	leaseRetryPeriod   time.Duration

	logLevel    string
	logFormat   string
	opsAddress  string
	enablePprof bool

	printVersion bool

	sleep         bool
	gateNamespace string
	minIdleAfter  time.Duration
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("zerowake-controller", flag.ContinueOnError)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "Path to a kubeconfig; empty means in-cluster configuration (or $KUBECONFIG when set).")
	fs.StringVar(&o.namespaces, "namespaces", "", "Comma-separated namespaces whose ScaleRequests to serve; empty means all namespaces.")
	fs.IntVar(&o.workers, "workers", 32, "ScaleRequests processed in parallel; each mostly waits on the API server.")
	fs.DurationVar(&o.rescaleDuration, "rescale-duration", 30*time.Second, "Cool-down between scale writes to one target; also the backoff cap and the longest gap between re-checks of an active request.")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 5*time.Minute, "How long a scaled target may take to become ready before its ScaleRequest fails with ReadyTimeout.")
	fs.StringVar(&o.allowedKinds, "allowed-kinds", controller.DefaultAllowedKinds, "Comma-separated Kind.group entries the controller may scale (e.g. Deployment.apps,Rollout.argoproj.io), or * for any kind with /scale.")
	fs.BoolVar(&o.requireOptIn, "require-opt-in", true, "Scale only workloads their owners labelled "+v1alpha1.LabelWake+"=true (capped by their "+v1alpha1.AnnotationMaxReplicas+" annotation). Turn off only where every ScaleRequest writer is trusted to scale any workload of the allowed kinds.")
	fs.IntVar(&o.defaultMaxRepl, "default-max-replicas", 1, "With --require-opt-in, the most minReplicas a ScaleRequest may ask for when the target's owner set no "+v1alpha1.AnnotationMaxReplicas+" annotation. Waking brings a workload from zero to serving; more is an autoscaler's job, and owners raise it with the annotation.")
	fs.Float64Var(&o.qps, "kube-api-qps", 200, "Steady requests per second to the API server, for each of the controller's API clients but the /scale one (status, inventory, events).")
	fs.IntVar(&o.burst, "kube-api-burst", 500, "Burst of requests to the API server, for each API client but the /scale one: a burst of wakes is the controller's normal load.")
	fs.Float64Var(&o.scaleQPS, "kube-api-scale-qps", 2000, "Steady requests per second of the /scale client. Its writes are bounded already (one per target per rescale window), and a burst of wakes should not wait on it; the API server's priority and fairness guards the server.")
	fs.IntVar(&o.scaleBurst, "kube-api-scale-burst", 2000, "Burst of requests of the /scale client.")
	fs.BoolVar(&o.leaderElect, "leader-elect", true, "Elect a leader through a Lease so that only one replica scales and writes status.")
	fs.StringVar(&o.leaseName, "leader-election-id", "zerowake-controller", "Name of the leader election Lease.")
	fs.StringVar(&o.leaseNamespace, "leader-election-namespace", "", "Namespace of the leader election Lease; empty means the pod's namespace ($POD_NAMESPACE), else zerowake-system.")
	fs.DurationVar(&o.leaseDuration, "leader-election-lease-duration", 15*time.Second, "How long a non-renewed lease stays valid.")
	fs.DurationVar(&o.leaseRenewDeadline, "leader-election-renew-deadline", 10*time.Second, "How long the leader keeps trying to renew before giving up leadership.")
	fs.DurationVar(&o.leaseRetryPeriod, "leader-election-retry-period", 2*time.Second, "Interval between attempts to acquire or renew the lease.")
	fs.StringVar(&o.logLevel, "log-level", "info", "Minimum log level: debug, info, warn or error.")
	fs.StringVar(&o.logFormat, "log-format", "json", "Log format: json or console.")
	fs.StringVar(&o.opsAddress, "ops-address", "", "Address (e.g. :8080) serving /metrics, /healthz and /readyz; empty disables it.")
	fs.BoolVar(&o.enablePprof, "enable-pprof", false, "Also serve Go profiles under /debug/pprof/ on --ops-address.")
	fs.BoolVar(&o.printVersion, "version", false, "Print the version and exit.")
	fs.BoolVar(&o.sleep, "sleep", true, "Scale to zero the workloads whose owners set "+v1alpha1.AnnotationIdleAfter+" once idle that long (needs --require-opt-in). Off, replicas are never lowered.")
	fs.StringVar(&o.gateNamespace, "gate-namespace", "", "Namespace of the gates' membership Leases, whose acknowledgements a sleep waits for; empty means the leader election namespace.")
	fs.DurationVar(&o.minIdleAfter, "min-idle-after", controller.DefaultMinIdleAfter, "The shortest "+v1alpha1.AnnotationIdleAfter+" accepted (tests lower it).")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	switch {
	case o.workers < 1:
		return nil, fmt.Errorf("--workers must be at least 1, got %d", o.workers)
	case o.rescaleDuration <= 0:
		return nil, fmt.Errorf("--rescale-duration must be positive, got %s", o.rescaleDuration)
	case o.readyTimeout <= 0:
		return nil, fmt.Errorf("--ready-timeout must be positive, got %s", o.readyTimeout)
	case o.defaultMaxRepl < 1 || o.defaultMaxRepl > v1alpha1.MaxMinReplicas:
		return nil, fmt.Errorf("--default-max-replicas must be between 1 and %d, got %d", v1alpha1.MaxMinReplicas, o.defaultMaxRepl)
	case o.qps <= 0 || o.burst < 1:
		return nil, fmt.Errorf("--kube-api-qps and --kube-api-burst must be positive")
	case o.scaleQPS <= 0 || o.scaleBurst < 1:
		return nil, fmt.Errorf("--kube-api-scale-qps and --kube-api-scale-burst must be positive")
	case o.leaderElect && !(o.leaseDuration > o.leaseRenewDeadline && o.leaseRenewDeadline > o.leaseRetryPeriod && o.leaseRetryPeriod > 0):
		return nil, fmt.Errorf("leader election needs lease duration > renew deadline > retry period > 0")
	}
	if o.leaseNamespace == "" {
		o.leaseNamespace = os.Getenv("POD_NAMESPACE")
	}
	if o.leaseNamespace == "" {
		o.leaseNamespace = "zerowake-system"
	}
	if o.gateNamespace == "" {
		o.gateNamespace = o.leaseNamespace
	}
	if o.minIdleAfter <= 0 {
		return nil, fmt.Errorf("--min-idle-after must be positive, got %s", o.minIdleAfter)
	}
	return o, nil
}

func main() {
	opts, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "zerowake-controller:", err)
		os.Exit(2)
	}
	if opts.printVersion {
		fmt.Println("zerowake-controller", version.Get())
		os.Exit(0)
	}
	logger, flush, err := logging.New(opts.logLevel, opts.logFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "zerowake-controller:", err)
		os.Exit(2)
	}
	logger.Info("Starting zerowake-controller", "version", version.Get())
	if opts.minIdleAfter < opts.rescaleDuration {
		// Allowed (tests do it), but a workload may then sleep within the rescale window of its
		// last scale-up, and the next call's wake waits for the rest of that window.
		logger.Info("Warning: --min-idle-after is below --rescale-duration; a wake right after a short sleep waits for the rescale window",
			"minIdleAfter", opts.minIdleAfter, "rescaleDuration", opts.rescaleDuration)
	}

	// The first SIGTERM or SIGINT drains in-flight work and releases the lease; a second one
	// exits at once.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	go func() {
		<-ctx.Done()
		stop()
	}()
	ctx = klog.NewContext(ctx, logger)
	setMemoryLimit(logger, "/sys/fs/cgroup")

	err = run(ctx, opts)
	if err != nil {
		logger.Error(err, "Controller failed")
	}
	flush()
	if err != nil {
		os.Exit(1)
	}
}

func run(ctx context.Context, opts *options) error {
	logger := klog.FromContext(ctx)
	allowed, err := controller.ParseAllowedKinds(opts.allowedKinds)
	if err != nil {
		return err
	}

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), leading)

	config, err := ops.RESTConfig(opts.kubeconfig)
	if err != nil {
		return err
	}
	config.QPS, config.Burst = float32(opts.qps), opts.burst
	config.UserAgent = "zerowake-controller"
	config.Wrap(apicount.Transport(registry, ""))

	kube, err := kubernetes.NewForConfig(config)
	if err != nil {
		return err
	}
	client, err := versioned.NewForConfig(config)
	if err != nil {
		return err
	}
	// The dynamic client only watches targets, one watch per target being woken. A compressed
	// watch keeps a gzip reader here (and a writer in the apiserver) per stream for events of a
	// few hundred bytes: a burst of 1,000 wakes paid ~35 MiB of heap for it.
	watchConfig := rest.CopyConfig(config)
	watchConfig.DisableCompression = true
	dyn, err := dynamic.NewForConfig(watchConfig)
	if err != nil {
		return err
	}
	discovery := memory.NewMemCacheClient(kube.Discovery())
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(discovery)
	scaleKinds := scale.NewDiscoveryScaleKindResolver(discovery)
	// The scale writes get a rate limiter of their own: in a burst of wakes they are what the
	// resolvers wait for, and must not queue behind status writes or the inventory's lists.
	scaleConfig := rest.CopyConfig(config)
	scaleConfig.QPS, scaleConfig.Burst = float32(opts.scaleQPS), opts.scaleBurst
	scales, err := scale.NewForConfig(scaleConfig, mapper, dynamic.LegacyAPIPathResolverFunc, scaleKinds)
	if err != nil {
		return err
	}

	// Reads a target's managed fields on the rare path where it is found up for a signal this
	// process has no record of scaling (a predecessor died before recording its write).
	records, err := metadata.NewForConfig(config)
	if err != nil {
		return err
	}

	utilruntime.Must(zerowakescheme.AddToScheme(scheme.Scheme))
	// Not ctx: after a signal, the work being drained still records its events; the deferred
	// Shutdown ends the broadcaster once run returns.
	broadcaster := record.NewBroadcaster(record.WithContext(context.WithoutCancel(ctx)))
	broadcaster.StartStructuredLogging(2)
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "zerowake-controller"})

	scaleRequests := map[string]informers.ScaleRequestInformer{}
	var factories []externalversions.SharedInformerFactory
	namespaces := splitList(opts.namespaces)
	if len(namespaces) == 0 {
		namespaces = []string{""}
	}
	for _, ns := range namespaces {
		factory := externalversions.NewSharedInformerFactoryWithOptions(client, 0, externalversions.WithNamespace(ns))
		factories = append(factories, factory)
		scaleRequests[ns] = factory.Zerowake().V1alpha1().ScaleRequests()
	}

	var ctrl *controller.Controller
	// The inventory follows the marked workloads of the kinds in use (every workload of them
	// when opt-in is off, as Ready requests still follow their targets). Its notifications
	// start once the controller exists: informers run only after New returns.
	selector := ""
	if opts.requireOptIn {
		selector = v1alpha1.LabelWake + "=true"
	}
	inventory := scaling.NewInventory(dyn, splitList(opts.namespaces), selector, []string{v1alpha1.AnnotationMaxReplicas, v1alpha1.AnnotationIdleAfter},
		func(gk schema.GroupKind, namespace, name string) {
			if ctrl != nil {
				ctrl.OnTargetChange(gk, namespace, name)
			}
		})
	defer inventory.Stop()
	metrics := controller.NewMetrics(registry, func() float64 {
		if ctrl == nil {
			return 0
		}
		return float64(ctrl.Active())
	})
	var sleep *controller.SleepConfig
	var leaseFactories []kubeinformers.SharedInformerFactory
	if opts.sleep && opts.requireOptIn {
		sleep = &controller.SleepConfig{Leases: kube.CoordinationV1(), MinIdleAfter: opts.minIdleAfter}
		activityLeases := newLeaseInformer(kube, splitList(opts.namespaces), activity.LabelActivity+"=true")
		members := newLeaseInformer(kube, []string{opts.gateNamespace}, activity.LabelGateMember+"=true")
		sleep.Activity, sleep.Members = activityLeases.informer, members.informer
		leaseFactories = append(leaseFactories, activityLeases.factories...)
		leaseFactories = append(leaseFactories, members.factories...)
	}
	ctrl, err = controller.New(client, scaleRequests,
		scaling.NewScaleHandler(scales, mapper, scaleKinds).WithWriteRecords(records),
		func(notify func(string)) controller.TargetWatcher { return scaling.NewWatcher(dyn, notify) },
		recorder, metrics, clock.RealClock{},
		controller.Config{
			RescaleDuration: opts.rescaleDuration,
			ReadyTimeout:    opts.readyTimeout,
			AllowedKinds:    allowed,
			Inventory:       inventory,
			RequireOptIn:    opts.requireOptIn,
			// A wake brings a target from zero to serving; its owner's annotation allows more.
			DefaultMaxReplicas: int32(opts.defaultMaxRepl),
			// Every target a request may wake is in the inventory then: waiting for its
			// readiness costs no watch of its own.
			FollowInInventory: opts.requireOptIn,
			QueueMetrics:      newQueueMetrics(registry),
			Sleep:             sleep,
		})
	if err != nil {
		return err
	}

	// Informers run on every replica, so a standby takes over with a warm cache. They are
	// stopped before Shutdown waits for them, however run returns: on ctx alone, Shutdown would
	// wait forever when run returns without a signal.
	informerCtx, stopInformers := context.WithCancel(ctx)
	for _, f := range factories {
		f.Start(informerCtx.Done())
	}
	for _, f := range leaseFactories {
		f.Start(informerCtx.Done())
	}
	defer func() {
		stopInformers()
		for _, f := range factories {
			f.Shutdown()
		}
		for _, f := range leaseFactories {
			f.Shutdown()
		}
	}()

	var leaderHealth *leaderelection.HealthzAdaptor
	if opts.leaderElect {
		leaderHealth = leaderelection.NewLeaderHealthzAdaptor(20 * time.Second)
	}
	if opts.opsAddress != "" {
		var healthy func(*http.Request) error
		if leaderHealth != nil {
			healthy = leaderHealth.Check
		}
		if err := ops.Serve(ctx, opts.opsAddress, registry, healthy, ctrl.HasSynced, "ScaleRequest cache not synced", opts.enablePprof); err != nil {
			return err
		}
	}

	if !opts.leaderElect {
		leading.Set(1)
		return ctrl.Run(ctx, opts.workers)
	}
	// The Lease gets a client of its own, as kube-controller-manager's does: renewals must not
	// queue behind a burst of events in a shared rate limiter, or the leader would lose its
	// lease exactly when it is busiest.
	leaseClient, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(config), "leader-election"))
	if err != nil {
		return err
	}
	return runAsLeader(ctx, opts, leaseClient, leaderHealth, func(ctx context.Context) error {
		return ctrl.Run(ctx, opts.workers)
	}, logger)
}

// runAsLeader runs work only while holding the Lease. The lease is released only after work
// has returned (drained), so a successor never overlaps with writes still in flight here.
func runAsLeader(ctx context.Context, opts *options, kube kubernetes.Interface, health *leaderelection.HealthzAdaptor,
	work func(context.Context) error, logger logr.Logger) error {
	hostname, err := os.Hostname()
	if err != nil {
		return err
	}
	identity := hostname + "_" + uuid.NewString()
	electionCtx, cancelElection := context.WithCancel(context.WithoutCancel(ctx))
	// electionEnded tells a lease given up on purpose (work done, or a signal before leading)
	// from one lost to a failed renewal.
	var electionEnded atomic.Bool
	endElection := func() {
		electionEnded.Store(true)
		cancelElection()
	}
	// Not endElection: the lost-lease check runs on its own goroutine and may come after return.
	defer cancelElection()

	var missingNamespace error
	lock := &checkedLeaseLock{
		Interface: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: opts.leaseNamespace, Name: opts.leaseName},
			Client:     kube.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
		},
		// Without its namespace the Lease can never be created: the election would retry
		// forever and the controller would serve nothing, which a log line every few seconds
		// does not make plain enough.
		onMissingNamespace: func(err error) {
			missingNamespace = fmt.Errorf("the leader election Lease cannot be created: namespace %q does not exist (%v). "+
				"Create it (kubectl create namespace %s), set --leader-election-namespace to an existing namespace, "+
				"or run a single replica with --leader-elect=false", opts.leaseNamespace, err, opts.leaseNamespace)
			endElection()
		},
	}
	var workErr error
	var workDone atomic.Bool
	lostLease := false
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   opts.leaseDuration,
		RenewDeadline:   opts.leaseRenewDeadline,
		RetryPeriod:     opts.leaseRetryPeriod,
		ReleaseOnCancel: true,
		WatchDog:        health,
		Name:            opts.leaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(leadingCtx context.Context) {
				logger.Info("Became leader", "identity", identity)
				leading.Set(1)
				// Work stops on a signal, and drains; or when the lease is lost, and does not, even
				// in the middle of a drain: a successor may be writing already.
				workCtx, cancel := context.WithCancel(ctx)
				context.AfterFunc(leadingCtx, func() {
					if !workDone.Load() && !electionEnded.Load() {
						exitOnLostLease(logger, identity)
					}
					cancel()
				})
				workErr = work(workCtx)
				workDone.Store(true)
				cancel()
				endElection()
			},
			OnStoppedLeading: func() {
				leading.Set(0)
				if !electionEnded.Load() {
					lostLease = true
				}
				logger.Info("Stopped leading", "identity", identity)
			},
			OnNewLeader: func(current string) {
				if current != identity {
					logger.Info("Another replica leads", "leader", current)
				}
			},
		},
	})
	if err != nil {
		return err
	}
	go func() {
		// A signal before this replica ever leads ends the election at once.
		<-ctx.Done()
		if !elector.IsLeader() {
			endElection()
		}
	}()
	elector.Run(electionCtx)
	if missingNamespace != nil {
		return missingNamespace
	}
	if lostLease {
		return errors.New("lost the leader election lease")
	}
	return workErr
}

// exitOnLostLease ends the process at once when the lease is lost while working. Another
// replica may lead as soon as the lease expires, so draining here (writes that can take longer
// than what remains of the lease) could overlap with its writes, and in-flight work cannot be
// cancelled from outside. The Deployment restarts this replica as a candidate, as it does
// kube-controller-manager and kube-scheduler, which exit on a lost lease too.
var exitOnLostLease = func(logger logr.Logger, identity string) {
	logger.Error(nil, "Lost the leader election lease; exiting at once, without draining, so that no write outlives it", "identity", identity)
	os.Exit(1)
}

// checkedLeaseLock reports a Lease that cannot be created because its namespace is missing.
type checkedLeaseLock struct {
	resourcelock.Interface
	onMissingNamespace func(error)
}

func (l *checkedLeaseLock) Create(ctx context.Context, record resourcelock.LeaderElectionRecord) error {
	err := l.Interface.Create(ctx, record)
	if apierrors.IsNotFound(err) {
		l.onMissingNamespace(err)
	}
	return err
}

func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// leaseInformer is an informer of zerowake's Leases and the factory that runs it.
type leaseInformer struct {
	informer  cache.SharedIndexInformer
	factories []kubeinformers.SharedInformerFactory
}

// newLeaseInformer follows the Leases matching selector in one namespace, or in all of them when
// namespaces names none or several (the selector keeps the cache to zerowake's own Leases).
func newLeaseInformer(kube kubernetes.Interface, namespaces []string, selector string) leaseInformer {
	ns := ""
	if len(namespaces) == 1 {
		ns = namespaces[0]
	}
	f := kubeinformers.NewSharedInformerFactoryWithOptions(kube, 0, kubeinformers.WithNamespace(ns),
		kubeinformers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	return leaseInformer{informer: f.Coordination().V1().Leases().Informer(), factories: []kubeinformers.SharedInformerFactory{f}}
}
