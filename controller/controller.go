// Package controller turns ScaleRequests into scale actions: an informer feeds a rate-limited
// workqueue, workers ask a Scaler to raise the target, watch it until ready, and write what
// happened into the ScaleRequest's status. It never writes a ScaleRequest's spec.
package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	zerowakev1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/generated/clientset/versioned"
	informers "github.com/zerowake/zerowake/generated/informers/externalversions/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/scaling"
)

// QueueName names the workqueue, and so its client-go metrics.
const QueueName = "scalerequests"

// FieldManager is the field manager of the controller's status writes (and of its /scale
// writes from zero).
const FieldManager = scaling.FieldManager

// Scaler raises a target to a minimum replica count; *scaling.ScaleHandler implements it.
type Scaler interface {
	// ScaleUp raises the target to minReplicas unless it already has them.
	ScaleUp(ctx context.Context, target scaling.Target, minReplicas int32) (scaling.Result, error)
	// Current reads the target's replicas without writing.
	Current(ctx context.Context, target scaling.Target) (scaling.Result, error)
	// Resolve returns the resource whose /scale serves the target's kind (cached after the
	// first call for a kind).
	Resolve(ctx context.Context, target scaling.Target) (schema.GroupVersionResource, error)
	// LastWrite returns this controller's last /scale write to the target, if the target still
	// records it (nobody set its replicas since). It costs an API call: only for a target found
	// up for a signal this process has no record of scaling.
	LastWrite(ctx context.Context, target scaling.Target, resource schema.GroupVersionResource) (scaling.Write, bool, error)
}

// Inventory holds the workloads whose owners marked them as wakeable, with their replicas, in
// a shared cache; *scaling.Inventory implements it. The controller reads it to check an owner's
// consent on the wake path without an API call, and to keep Ready requests truthful after
// something sets their target back to zero.
type Inventory interface {
	// Track starts following the workloads of resource, of kind gk, if it is not followed yet.
	Track(ctx context.Context, gk schema.GroupKind, resource schema.GroupVersionResource)
	// Lookup returns the named workload, waiting for the resource's cache to fill the first
	// time; found is false when no followed workload has that name.
	Lookup(ctx context.Context, gk schema.GroupKind, resource schema.GroupVersionResource, namespace, name string) (entry scaling.InventoryEntry, found bool, err error)
}

// TargetWatcher follows targets while requests wait for them; *scaling.Watcher implements it
// with a watch per target, inventoryFollower from the Inventory's shared cache.
type TargetWatcher interface {
	// Watch follows the named target under id. With after set (the resourceVersion of a scale
	// write just made), State reports only what the target was at or after that write.
	Watch(ctx context.Context, id string, resource schema.GroupVersionResource, namespace, name, after string)
	Forget(id string)
	State(id string) (scaling.TargetState, bool)
}

// Config holds the controller's tunables.
type Config struct {
	// RescaleDuration is the cool-down between scale writes to one target, the cap of the
	// failure backoff, and the longest an active request goes without a re-check.
	RescaleDuration time.Duration
	// ReadyTimeout is how long a scaled target may take to become ready before the request fails.
	ReadyTimeout time.Duration
	// AllowedKinds are the kinds the controller may scale.
	AllowedKinds KindSet
	// Inventory, if set, follows marked workloads: Ready requests follow their target there.
	Inventory Inventory
	// RequireOptIn refuses targets the Inventory does not hold (their owners did not mark
	// them) and minReplicas above an owner's cap. It needs Inventory.
	RequireOptIn bool
	// DefaultMaxReplicas caps minReplicas, with RequireOptIn, for targets whose owner set no
	// cap of their own (annotation zerowake.dev/max-replicas); 0 sets no such cap.
	DefaultMaxReplicas int32
	// FollowInInventory follows active requests' targets in the Inventory, which holds every
	// target a request may wake when RequireOptIn is set, rather than with a watch per target
	// (newWatcher is then not called). It needs Inventory.
	FollowInInventory bool
	// QueueMetrics, if set, receives the workqueue's metrics.
	QueueMetrics workqueue.MetricsProvider
	// Sleep, if set, puts idle targets to sleep when their owners asked for it. It needs
	// Inventory, keeping the zerowake.dev/idle-after annotation.
	Sleep *SleepConfig
}

// Controller reconciles ScaleRequests.
type Controller struct {
	client   versioned.Interface
	sources  map[string]source
	queue    workqueue.TypedRateLimitingInterface[cache.ObjectName]
	scaler   Scaler
	watcher  TargetWatcher
	recorder record.EventRecorder
	clock    clock.Clock
	config   Config
	window   *rescaleWindow
	metrics  *Metrics
	writes   *ownWrites
	outcomes *pendingOutcomes
	// sightings keeps when each unsettled signal was first seen, which bounds the resolver's
	// clock in the cold start.
	sightings *signalSightings
	// scaleFirst holds readiness status writes while scale writes are still to come.
	scaleFirst *firstScales
	// recheck paces the re-checks of failures someone else may fix.
	recheck   workqueue.TypedRateLimiter[cache.ObjectName]
	inventory Inventory
	targets   *requestsByTarget
	// sleeps is nil unless Config.Sleep is set.
	sleeps *sleeps

	// watching maps each request holding a target watch to the target's id, so a watch can be
	// dropped when its last request settles or is deleted.
	mu       sync.Mutex
	watching map[cache.ObjectName]string
	// holders counts the requests in watching that hold each target id.
	holders map[string]int
}

// source is one ScaleRequest informer's view: all namespaces (keyed "") or one namespace.
type source struct {
	indexer cache.Indexer
	synced  cache.InformerSynced
}

// New builds a controller over ScaleRequest informers keyed by the namespace they watch ("" for
// all namespaces). newWatcher builds the target watcher, given the function through which it
// reports target changes.
func New(
	client versioned.Interface,
	scaleRequests map[string]informers.ScaleRequestInformer,
	scaler Scaler,
	newWatcher func(notify func(id string)) TargetWatcher,
	recorder record.EventRecorder,
	metrics *Metrics,
	clk clock.WithTicker,
	config Config,
) (*Controller, error) {
	c := &Controller{
		client:     client,
		sources:    map[string]source{},
		scaler:     scaler,
		recorder:   recorder,
		clock:      clk,
		config:     config,
		window:     newRescaleWindow(config.RescaleDuration),
		watching:   map[cache.ObjectName]string{},
		holders:    map[string]int{},
		writes:     newOwnWrites(),
		outcomes:   newPendingOutcomes(),
		sightings:  newSignalSightings(),
		scaleFirst: newFirstScales(),
		// A failure someone else may fix is looked at again soon (a just-restarted API server
		// may refuse requests for a second while its authorizer warms up), then less often, and
		// at least once per window.
		recheck:   workqueue.NewTypedItemExponentialFailureRateLimiter[cache.ObjectName](time.Second, max(config.RescaleDuration, time.Second)),
		inventory: config.Inventory,
		targets:   newRequestsByTarget(),
	}
	c.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		// Transient failures back off exponentially from a few milliseconds, but never wait
		// longer than one rescale window.
		workqueue.NewTypedItemExponentialFailureRateLimiter[cache.ObjectName](5*time.Millisecond, config.RescaleDuration),
		workqueue.TypedRateLimitingQueueConfig[cache.ObjectName]{Name: QueueName, MetricsProvider: config.QueueMetrics, Clock: clk},
	)
	if config.FollowInInventory && config.Inventory != nil {
		c.watcher = newInventoryFollower(config.Inventory)
	} else {
		c.watcher = newWatcher(c.enqueueTarget)
	}
	if metrics == nil {
		metrics = NewMetrics(nil, nil)
	}
	c.metrics = metrics

	for namespace, informer := range scaleRequests {
		if err := informer.Informer().SetTransform(dropManagedFields); err != nil {
			return nil, fmt.Errorf("setting the informer's transform: %w", err)
		}
		if _, err := informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    c.onAdd,
			UpdateFunc: c.onUpdate,
			DeleteFunc: c.onDelete,
		}); err != nil {
			return nil, fmt.Errorf("adding event handler: %w", err)
		}
		c.sources[namespace] = source{
			indexer: informer.Informer().GetIndexer(),
			synced:  informer.Informer().HasSynced,
		}
	}
	if len(c.sources) == 0 {
		return nil, errors.New("no ScaleRequest informer given")
	}
	if config.Sleep != nil && config.Inventory != nil {
		if err := c.startSleeping(); err != nil {
			return nil, fmt.Errorf("adding the sleep handlers: %w", err)
		}
	}
	return c, nil
}

// sourceFor returns the informer view that holds namespace.
func (c *Controller) sourceFor(namespace string) source {
	if s, ok := c.sources[namespace]; ok {
		return s
	}
	return c.sources[""]
}

// HasSynced reports whether every ScaleRequest informer has synced; it backs /readyz.
func (c *Controller) HasSynced() bool {
	for _, s := range c.sources {
		if !s.synced() {
			return false
		}
	}
	return true
}

// Active reports how many requests hold a target watch.
func (c *Controller) Active() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.watching)
}

func (c *Controller) enqueue(obj any) {
	name, err := cache.DeletionHandlingObjectToName(obj)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	c.queue.Add(name)
}

// onAdd queues a new request, unless it is settled: a settled request needs no work, and at
// start-up most requests in a cluster are settled, so none of them costs a sync or the queue
// memory.
func (c *Controller) onAdd(obj any) {
	if sr, ok := obj.(*zerowakev1alpha1.ScaleRequest); ok {
		c.targets.update(nil, sr)
		c.writes.observed(sr)
		if settled(sr) {
			return
		}
		c.sightings.saw(sr, c.clock.Now())
		if !servedSignal(sr) {
			c.scaleFirst.expect(cache.MetaObjectToName(sr))
		}
	}
	c.enqueue(obj)
}

// onUpdate ignores updates that carry no new signal, above all the controller's own status
// writes: a spec change moves metadata.generation, a status write does not.
func (c *Controller) onUpdate(oldObj, newObj any) {
	old, okOld := oldObj.(*zerowakev1alpha1.ScaleRequest)
	sr, okNew := newObj.(*zerowakev1alpha1.ScaleRequest)
	if !okOld || !okNew || old.ResourceVersion == sr.ResourceVersion {
		return
	}
	c.targets.update(old, sr)
	c.writes.observed(sr)
	if settled(sr) {
		// A standby's informer sees the leader settle requests: nothing to remember for them.
		c.sightings.forget(cache.MetaObjectToName(sr))
	} else {
		c.sightings.saw(sr, c.clock.Now())
	}
	if old.Generation != sr.Generation || sr.Status.ObservedGeneration != sr.Generation {
		if !servedSignal(sr) {
			c.scaleFirst.expect(cache.MetaObjectToName(sr))
		}
		c.enqueue(sr)
	}
}

func (c *Controller) onDelete(obj any) {
	final := obj
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		final = d.Obj
	}
	if sr, ok := final.(*zerowakev1alpha1.ScaleRequest); ok {
		c.targets.update(sr, nil)
	}
	if name, err := cache.DeletionHandlingObjectToName(obj); err == nil {
		c.writes.forget(name)
	}
	c.enqueue(obj)
}

// enqueueTarget queues every request that names the target id; the target watch reports
// through it.
func (c *Controller) enqueueTarget(id string) {
	c.enqueueTargetIf(id, func(*zerowakev1alpha1.ScaleRequest) bool { return true })
}

// enqueueTargetExcept queues every request naming the target id but key: they look again once
// a write to the target ends.
func (c *Controller) enqueueTargetExcept(id string, key cache.ObjectName) {
	c.enqueueTargetIf(id, func(sr *zerowakev1alpha1.ScaleRequest) bool {
		return sr.Namespace != key.Namespace || sr.Name != key.Name
	})
}

// OnTargetChange is how the Inventory reports a change of a followed workload. It queues the
// requests that follow the target without a watch of their own: Ready and Idle ones, those
// waiting for the owner's mark, and, when the Inventory follows them (FollowInInventory),
// active ones. Otherwise active requests hear of their target from its watch.
func (c *Controller) OnTargetChange(gk schema.GroupKind, namespace, name string) {
	id := namespace + "/" + gk.Group + "/" + gk.Kind + "/" + name
	if c.config.FollowInInventory {
		c.enqueueTarget(id)
		return
	}
	c.enqueueTargetIf(id, func(sr *zerowakev1alpha1.ScaleRequest) bool {
		return settled(sr) || sr.Status.Phase == zerowakev1alpha1.PhaseFailed
	})
}

func (c *Controller) enqueueTargetIf(id string, want func(*zerowakev1alpha1.ScaleRequest) bool) {
	namespace, _, _ := strings.Cut(id, "/")
	src := c.sourceFor(namespace)
	if src.indexer == nil {
		return
	}
	for _, key := range c.targets.requests(id) {
		obj, exists, err := src.indexer.GetByKey(key.String())
		if err != nil || !exists {
			continue
		}
		if sr, ok := obj.(*zerowakev1alpha1.ScaleRequest); ok && want(c.writes.newest(sr)) {
			c.queue.Add(key)
		}
	}
}

// requestsFor returns the cached requests naming the target id (as the controller last wrote
// them).
func (c *Controller) requestsFor(id string) []*zerowakev1alpha1.ScaleRequest {
	namespace, _, _ := strings.Cut(id, "/")
	src := c.sourceFor(namespace)
	if src.indexer == nil {
		return nil
	}
	var out []*zerowakev1alpha1.ScaleRequest
	for _, key := range c.targets.requests(id) {
		obj, exists, err := src.indexer.GetByKey(key.String())
		if err != nil || !exists {
			continue
		}
		if sr, ok := obj.(*zerowakev1alpha1.ScaleRequest); ok {
			out = append(out, c.writes.newest(sr))
		}
	}
	return out
}

// targetID identifies a request's target as namespace/group/Kind/name: the key of the target
// index, the rescale window and the target watch.
func targetID(sr *zerowakev1alpha1.ScaleRequest) string {
	ref := sr.Spec.ScaleTargetRef
	group := ref.APIVersion
	if gv, err := schema.ParseGroupVersion(ref.APIVersion); err == nil {
		group = gv.Group
	}
	return sr.Namespace + "/" + group + "/" + ref.Kind + "/" + ref.Name
}

// Run waits for the informer cache, runs workers until ctx ends, then stops taking work, lets
// the workers finish what they hold, and stops every target watch.
func (c *Controller) Run(ctx context.Context, workers int) error {
	logger := klog.FromContext(ctx)
	defer utilruntime.HandleCrash()

	logger.Info("Starting ScaleRequest controller", "workers", workers,
		"rescaleDuration", c.config.RescaleDuration, "readyTimeout", c.config.ReadyTimeout,
		"allowedKinds", c.config.AllowedKinds.String())
	if !cache.WaitForCacheSync(ctx.Done(), c.HasSynced) {
		c.queue.ShutDown()
		return errors.New("timed out waiting for the ScaleRequest cache to sync")
	}

	c.trackKinds(ctx)

	var wg sync.WaitGroup
	wg.Go(func() { c.queueLeftTargets(ctx) })
	for range workers {
		wg.Go(func() { wait.UntilWithContext(ctx, c.runWorker, time.Second) })
	}
	<-ctx.Done()
	logger.Info("Shutting down ScaleRequest controller; draining in-flight work")
	c.queue.ShutDownWithDrain()
	wg.Wait()
	c.writeHeldStatus(ctx, workers)
	if stopper, ok := c.watcher.(interface{ StopAll() }); ok {
		stopper.StopAll()
	}
	logger.Info("ScaleRequest controller stopped")
	return nil
}

// writeHeldStatus writes the status of every scale write whose status write was held (scale
// first), so that a successor finds each outcome recorded (ScaledFromZero, lastScaleTime)
// rather than a target already up. A burst can leave thousands held at a SIGTERM: they are
// written by as many goroutines as there were workers, to end within the grace period.
func (c *Controller) writeHeldStatus(ctx context.Context, workers int) {
	logger := klog.FromContext(ctx)
	keys := make(chan cache.ObjectName)
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Go(func() {
			for key := range keys {
				workCtx, cancel := context.WithTimeout(klog.NewContext(context.WithoutCancel(ctx), logger.WithValues("scaleRequest", key.String())), 10*time.Second)
				if err := c.sync(workCtx, key); err != nil {
					utilruntime.HandleErrorWithContext(ctx, err, "Writing a held status before stopping failed", "scaleRequest", key.String())
				}
				cancel()
			}
		})
	}
	for _, key := range c.outcomes.keys() {
		keys <- key
	}
	close(keys)
	wg.Wait()
}

func (c *Controller) runWorker(ctx context.Context) {
	for c.processNextWorkItem(ctx) {
	}
}

// processNextWorkItem handles one key. Work in flight when the queue shuts down uses a context
// that outlives ctx, so a drained item finishes its writes instead of failing half-way.
func (c *Controller) processNextWorkItem(ctx context.Context) bool {
	key, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(key)
	if ctx.Err() != nil {
		// Stopping: only work already under way is finished. Keys still queued are left to
		// the next leader or process, whose informer queues every request not yet settled;
		// working through them here would only delay its start.
		return false
	}

	logger := klog.FromContext(ctx).WithValues("scaleRequest", key.String())
	workCtx, cancel := context.WithTimeout(klog.NewContext(context.WithoutCancel(ctx), logger), 30*time.Second)
	defer cancel()

	err := c.sync(workCtx, key)
	switch {
	case err == nil:
		c.queue.Forget(key)
	case apierrors.IsConflict(err) || scaling.ReasonOf(err) == scaling.ReasonConflict:
		// Someone wrote the object between our read and write; retry promptly, it is not a fault.
		logger.V(2).Info("Conflict, retrying", "err", err)
		c.queue.AddRateLimited(key)
	default:
		utilruntime.HandleErrorWithContext(ctx, err, "Syncing ScaleRequest failed, retrying with backoff", "scaleRequest", key.String())
		c.queue.AddRateLimited(key)
	}
	return true
}
