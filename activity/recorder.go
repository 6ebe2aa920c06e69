package activity

import (
	"cmp"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	coordinationclient "k8s.io/client-go/kubernetes/typed/coordination/v1"
	coordinationlisters "k8s.io/client-go/listers/coordination/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// Recorder renews workloads' activity Leases, at most once per interval each.
type Recorder struct {
	client   kubernetes.Interface
	factory  informers.SharedInformerFactory
	leases   coordinationlisters.LeaseLister
	synced   cache.InformerSynced
	identity string
	clock    clock.PassiveClock

	// renewed maps namespace/name to when this recorder last renewed that Lease: its informer
	// may not have delivered the renewal yet.
	renewed sync.Map
	// inFlight holds the keys being renewed, so a flood of calls makes one write.
	mu       sync.Mutex
	inFlight map[string]bool
	wg       sync.WaitGroup
	ctx      context.Context
	cancel   context.CancelFunc
	writes   func()
	// offset, a fraction of an interval below a fifth, is added to this recorder's threshold:
	// of several gates, the one with the smallest renews, and the others find its renewal in
	// their caches instead of sending a renewal that conflicts.
	offset float64
}

// RecorderOptions configure a Recorder.
type RecorderOptions struct {
	// Namespace limits the informer to one namespace; empty means all.
	Namespace string
	// Identity is written as the Lease's holderIdentity: who recorded the latest activity.
	Identity string
	// Clock is the time source. Default the real clock.
	Clock clock.PassiveClock
	// OnWrite, if set, is called after each renewal the API server accepted (for metrics).
	OnWrite func()
}

// NewRecorder returns a Recorder; Start it before use.
func NewRecorder(client kubernetes.Interface, opts RecorderOptions) *Recorder {
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(opts.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = LabelActivity + "=true" }))
	informer := factory.Coordination().V1().Leases()
	r := &Recorder{
		client:   client,
		factory:  factory,
		leases:   informer.Lister(),
		synced:   informer.Informer().HasSynced,
		identity: opts.Identity,
		clock:    opts.Clock,
		inFlight: map[string]bool{},
		writes:   opts.OnWrite,
		offset:   rand.Float64() / 5,
	}
	if r.clock == nil {
		r.clock = clock.RealClock{}
	}
	return r
}

// Start runs the informer until ctx ends or Stop, and waits for its cache.
func (r *Recorder) Start(ctx context.Context) error {
	ctx, r.cancel = context.WithCancel(ctx)
	r.ctx = ctx
	r.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), r.synced) {
		return errors.New("activity: waiting for the Lease cache to sync: " + context.Cause(ctx).Error())
	}
	return nil
}

// Stop stops the informer and waits for it and the renewals under way.
func (r *Recorder) Stop() {
	if r.cancel != nil {
		r.cancel()
	}
	r.factory.Shutdown()
	r.wg.Wait()
}

// Touch records activity of the workload of kind named name. It costs a cache lookup; when the
// workload has an activity Lease at least one interval old, it renews it in the background.
// Workloads that do not sleep have no Lease and cost nothing more.
func (r *Recorder) Touch(namespace, kind, name string) {
	if r == nil || r.ctx == nil {
		return
	}
	leaseName := LeaseName(kind, name)
	lease, err := r.leases.Leases(namespace).Get(leaseName)
	if err != nil {
		return
	}
	now := r.clock.Now()
	interval := MinInterval
	if d := lease.Spec.LeaseDurationSeconds; d != nil && *d > 0 {
		interval = time.Duration(*d) * time.Second
	}
	if rt := lease.Spec.RenewTime; rt != nil && now.Sub(rt.Time) < interval+time.Duration(r.offset*float64(interval)) {
		return
	}
	key := namespace + "/" + leaseName
	if at, ok := r.renewed.Load(key); ok && now.Sub(at.(time.Time)) < interval {
		return
	}
	r.mu.Lock()
	if r.inFlight[key] || r.ctx.Err() != nil {
		r.mu.Unlock()
		return
	}
	r.inFlight[key] = true
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		defer func() {
			r.mu.Lock()
			delete(r.inFlight, key)
			r.mu.Unlock()
		}()
		r.renew(lease, now, key)
	}()
}

// renew writes renewTime now on the cached lease, guarded by its resourceVersion.
func (r *Recorder) renew(cached *coordinationv1.Lease, now time.Time, key string) {
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	lease := cached.DeepCopy()
	at := metav1.NewMicroTime(now)
	lease.Spec.RenewTime = &at
	if r.identity != "" {
		lease.Spec.HolderIdentity = &r.identity
	}
	_, err := r.client.CoordinationV1().Leases(lease.Namespace).Update(ctx, lease, metav1.UpdateOptions{FieldManager: "zerowake-activity"})
	switch {
	case err == nil:
		r.renewed.Store(key, now)
		if r.writes != nil {
			r.writes()
		}
	case apierrors.IsConflict(err):
		// Someone renewed it meanwhile (the next call finds it fresh in the cache), or the
		// controller changed its interval (the next call renews the new copy).
	default:
		klog.FromContext(ctx).V(2).Info("Could not record activity", "lease", key, "err", err)
	}
}

// Once records activity with one read and at most one write, without an informer: for a
// short-lived caller such as kubectl zerowake. A workload without an activity Lease costs the
// read only.
type Once struct {
	Leases   coordinationclient.LeasesGetter
	Identity string
	// Timeout bounds the read and the write. Default 5s.
	Timeout time.Duration
}

// Touch renews the workload's activity Lease if it has one; failures are ignored (a caller
// without the rights records nothing, and the workload may sleep sooner).
func (o Once) Touch(namespace, kind, name string) {
	if o.Leases == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmp.Or(o.Timeout, 5*time.Second))
	defer cancel()
	leases := o.Leases.Leases(namespace)
	lease, err := leases.Get(ctx, LeaseName(kind, name), metav1.GetOptions{})
	if err != nil {
		return
	}
	now := metav1.NewMicroTime(time.Now())
	lease.Spec.RenewTime = &now
	if o.Identity != "" {
		lease.Spec.HolderIdentity = &o.Identity
	}
	_, _ = leases.Update(ctx, lease, metav1.UpdateOptions{FieldManager: "zerowake-activity"})
}
