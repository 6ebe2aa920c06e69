package wake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/generated/clientset/versioned"
	"github.com/zerowake/zerowake/generated/informers/externalversions/internalinterfaces"
	srinformers "github.com/zerowake/zerowake/generated/informers/externalversions/zerowake/v1alpha1"
)

// Defaults of Options.
const (
	// DefaultWindow matches the controller's default --rescale-duration.
	DefaultWindow       = 30 * time.Second
	DefaultWriteTimeout = 10 * time.Second
	DefaultErrorBackoff = time.Second
	DefaultFieldManager = "zerowake-wake"
)

// Options configure a Client. The zero value is usable.
type Options struct {
	// Namespace limits the informer (and so the targets this client can wake) to one namespace,
	// which needs only namespaced list/watch rights. Empty means all namespaces. A Target with
	// an empty Namespace uses this one.
	Namespace string

	// Window is how long a signal stays fresh: a Ready or Failed request signalled less than
	// Window ago, or any request this client wrote less than Window ago, is not written again.
	// Set it to the controller's --rescale-duration. Default DefaultWindow.
	Window time.Duration

	// WriteTimeout bounds one create or patch, independently of the callers' contexts (a
	// write is shared by every caller waiting for it). Default DefaultWriteTimeout.
	WriteTimeout time.Duration

	// ErrorBackoff is how long a failed write is remembered: Wake calls in that time return the
	// same error without an API call. Default DefaultErrorBackoff; negative disables.
	ErrorBackoff time.Duration

	// FieldManager is sent with every write. Default DefaultFieldManager.
	FieldManager string

	// Labels are set on ScaleRequests this client creates.
	Labels map[string]string

	// TweakListOptions narrows the informer, e.g. to one object with a metadata.name field
	// selector. A client then cannot see requests outside the selection: Wake would try to
	// create them and treat AlreadyExists as success.
	TweakListOptions func(*metav1.ListOptions)

	// Clock is the time source for windows and requestedAt. Default the real clock.
	Clock clock.PassiveClock

	// Activity, if set, hears of every Wake: it records activity for targets that sleep when
	// idle (an *activity.Recorder does, at most one write per target per interval).
	Activity ActivityRecorder

	// OnChange, if set, is called after the informer's copy of a ScaleRequest changed (deleted
	// set when it is gone), once the client's own answers reflect it. It must not block.
	OnChange func(sr *v1alpha1.ScaleRequest, deleted bool)
}

// ActivityRecorder records that a workload was used; *activity.Recorder implements it.
type ActivityRecorder interface {
	Touch(namespace, kind, name string)
}

// Action is what Wake did.
type Action uint8

const (
	// ActionNone is never returned with a nil error.
	ActionNone Action = iota
	// ActionCreated: the ScaleRequest was created.
	ActionCreated
	// ActionBumped: spec.requestedAt of an existing ScaleRequest was bumped (a new generation).
	ActionBumped
	// ActionRecentlySignalled: this client wrote the signal less than the window ago.
	ActionRecentlySignalled
	// ActionAlreadyActive: the latest signal is still being served (not yet observed by the
	// controller, Pending or Scaling), or someone else wrote it concurrently.
	ActionAlreadyActive
	// ActionAlreadyReady: the request is Ready and was signalled less than the window ago.
	ActionAlreadyReady
	// ActionRecentlyFailed: the request is Failed and was signalled less than the window ago;
	// WaitReady will return its *FailedError.
	ActionRecentlyFailed
)

var actionNames = [...]string{"none", "created", "bumped", "recently-signalled", "already-active", "already-ready", "recently-failed"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "unknown"
}

// Wrote reports whether the action was an API write by this call (or by the call it shared).
func (a Action) Wrote() bool { return a == ActionCreated || a == ActionBumped }

// MarshalText makes an Action print as its name in JSON.
func (a Action) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// key identifies a ScaleRequest without building a string.
type key struct{ namespace, name string }

func (k key) String() string { return k.namespace + "/" + k.name }

// entry is what the client knows about one ScaleRequest. An entry is immutable once stored in
// Client.entries: updates (under Client.mu) store a modified copy, so readers need no lock.
type entry struct {
	// obj is the informer's latest copy; shared with the informer cache, never modified.
	obj *v1alpha1.ScaleRequest

	// The latest successful write by this client.
	wroteAt  time.Time
	wroteMin int32
	wroteGen int64     // metadata.generation the write produced, 0 when unknown
	wroteUID types.UID // uid of the object written, "" when unknown
	wroteRef v1alpha1.CrossVersionObjectReference

	// The latest failed write, remembered for ErrorBackoff.
	errAt time.Time
	err   error

	// demand is shared by every copy of the entry (allocated once per key): when a caller was
	// last answered without a write. resignalledGen is the generation whose Idle this client
	// has re-signalled on its own (at most once each).
	demand         *demandMark
	resignalledGen int64
}

// demandMark records when a target was last in demand without a write, in Unix nanoseconds.
// Callers answered from the cache store into it concurrently, with no lock and no allocation.
type demandMark struct{ at atomic.Int64 }

// demandResolution is how finely demand is timed: a store is skipped when the mark is already
// this recent, so that a flood of calls does not bounce the mark's cache line between cores.
const demandResolution = time.Millisecond

func (d *demandMark) note(now time.Time) {
	n := now.UnixNano()
	if n-d.at.Load() >= int64(demandResolution) {
		d.at.Store(n)
	}
}

// DemandSkew is how much earlier than the controller's record of a scale-down (the Ready
// condition's lastTransitionTime) demand may have been answered from the cache and still be
// taken as lost to the scale-down. It covers clock skew between this client and the controller
// and the controller's reaction time; demand older than that was served while the target was up.
const DemandSkew = 2 * time.Second

const (
	stateNew int32 = iota
	stateStarting
	stateRunning
	stateStopped
)

// Client signals demand for workloads through ScaleRequests and waits for them to be ready.
type Client struct {
	client       versioned.Interface
	namespace    string
	window       time.Duration
	writeTimeout time.Duration
	errorBackoff time.Duration
	fieldManager string
	labels       map[string]string
	clock        clock.PassiveClock
	activity     ActivityRecorder
	onChange     func(sr *v1alpha1.ScaleRequest, deleted bool)

	informer srinformers.ScaleRequestIndexInformer
	sf       singleflight.Group

	state atomic.Int32

	// entries maps key to *entry. Wake reads it without locking; updates hold mu.
	entries sync.Map
	// mu serializes updates of entries and guards waiters.
	mu sync.Mutex
	// waiters holds, per key, a channel closed (and removed) on the next informer event.
	waiters map[key]chan struct{}
	// failedOnly lists, oldest first, the keys whose entry holds only a failed write.
	failedOnly []failedKey

	// Lifecycle; written by Start before state becomes stateRunning.
	lifeMu   sync.Mutex
	stopping bool
	runCtx   context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup // informer, watchdog and in-flight writes
}

// New returns a Client using client for the informer and the writes. Call Start before use.
func New(client versioned.Interface, opts Options) *Client {
	c := &Client{
		client:       client,
		namespace:    opts.Namespace,
		window:       opts.Window,
		writeTimeout: opts.WriteTimeout,
		errorBackoff: opts.ErrorBackoff,
		fieldManager: opts.FieldManager,
		labels:       maps.Clone(opts.Labels),
		clock:        opts.Clock,
		activity:     opts.Activity,
		onChange:     opts.OnChange,
		waiters:      make(map[key]chan struct{}),
	}
	if c.window <= 0 {
		c.window = DefaultWindow
	}
	if c.writeTimeout <= 0 {
		c.writeTimeout = DefaultWriteTimeout
	}
	if c.errorBackoff == 0 {
		c.errorBackoff = DefaultErrorBackoff
	}
	if c.fieldManager == "" {
		c.fieldManager = DefaultFieldManager
	}
	if c.clock == nil {
		c.clock = clock.RealClock{}
	}
	c.informer = srinformers.NewTypedScaleRequestInformerWithOptions(client, opts.Namespace, internalinterfaces.InformerOptions{
		TweakListOptions: opts.TweakListOptions,
	})
	return c
}

// NewForConfig builds the clientset from cfg (wrap cfg.Transport or set cfg.WrapTransport to
// observe the requests) and returns New(clientset, opts).
func NewForConfig(cfg *rest.Config, opts Options) (*Client, error) {
	cs, err := versioned.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return New(cs, opts), nil
}

// Start runs the informer and waits for its cache to sync. It fails fast when listing is
// refused (Forbidden, Unauthorized, or the ScaleRequest CRD is not installed); other list
// errors are retried until ctx ends. Cancelling ctx later stops the client like Stop. A Client
// can be started once.
func (c *Client) Start(ctx context.Context) error {
	if !c.state.CompareAndSwap(stateNew, stateStarting) {
		return errors.New("wake: Start called twice, or after Stop")
	}
	fatal := make(chan error, 1)
	_ = c.informer.SetTransform(stripManagedFields)
	_ = c.informer.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
		if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) || apierrors.IsNotFound(err) {
			select {
			case fatal <- err:
			default:
			}
		}
		cache.DefaultWatchErrorHandler(ctx, r, err)
	})
	reg, err := c.informer.AddTypedEventHandler(srinformers.ScaleRequestHandlerFuncs{
		AddFunc:    c.onUpsert,
		UpdateFunc: func(_, sr *v1alpha1.ScaleRequest) { c.onUpsert(sr) },
		DeleteFunc: c.onDelete,
	})
	if err != nil {
		c.state.Store(stateStopped)
		return fmt.Errorf("wake: adding event handler: %w", err)
	}

	c.lifeMu.Lock()
	if c.stopping {
		c.lifeMu.Unlock()
		return ErrStopped
	}
	c.runCtx, c.cancel = context.WithCancel(ctx)
	runCtx := c.runCtx
	c.wg.Add(2)
	c.lifeMu.Unlock()
	go func() {
		defer c.wg.Done()
		c.informer.RunWithContext(runCtx)
	}()
	go func() { // a cancelled Start context stops the client
		defer c.wg.Done()
		<-runCtx.Done()
		c.state.Store(stateStopped)
	}()

	select {
	case <-reg.HasSyncedChecker().Done(): // the handler has seen the initial list
		c.state.CompareAndSwap(stateStarting, stateRunning)
		if c.state.Load() != stateRunning {
			return ErrStopped
		}
		return nil
	case err := <-fatal:
		c.Stop()
		return fmt.Errorf("wake: listing scalerequests: %w", err)
	case <-runCtx.Done():
		c.Stop()
		if ctx.Err() == nil {
			return ErrStopped // Stop was called during Start
		}
		return fmt.Errorf("wake: waiting for the scalerequest cache to sync: %w", ctx.Err())
	}
}

// Stop stops the informer, wakes every WaitReady with ErrStopped, and waits for the informer
// and in-flight writes to end. It is safe to call more than once and before Start.
func (c *Client) Stop() {
	c.state.Store(stateStopped)
	c.lifeMu.Lock()
	c.stopping = true
	cancel := c.cancel
	c.lifeMu.Unlock()
	if cancel != nil {
		cancel()
	}
	c.wg.Wait()
}

func (c *Client) running() error {
	switch c.state.Load() {
	case stateRunning:
		return nil
	case stateStopped:
		return ErrStopped
	}
	return ErrNotStarted
}

// resolveNamespace applies Options.Namespace and checks the informer can see the namespace.
func (c *Client) resolveNamespace(t *Target) error {
	if t.Namespace == "" {
		if c.namespace == "" {
			return fmt.Errorf("%w: empty namespace", ErrInvalidTarget)
		}
		t.Namespace = c.namespace
		return nil
	}
	if c.namespace != "" && t.Namespace != c.namespace {
		return ErrNamespaceNotWatched
	}
	return nil
}

// Wake makes sure the latest signal for t asks for it to be up; see the package documentation
// for when it writes. Concurrent calls for one target share one API call; calls within the
// window after a write cost no API call and no allocation. ctx bounds only the caller's wait:
// the shared write runs under Options.WriteTimeout.
func (c *Client) Wake(ctx context.Context, t Target) (Action, error) {
	if err := c.running(); err != nil {
		return ActionNone, err
	}
	if err := c.resolveNamespace(&t); err != nil {
		return ActionNone, err
	}
	if err := t.validate(); err != nil {
		return ActionNone, err
	}
	want := t.minReplicas()
	k := key{t.Namespace, t.Name}
	now := c.clock.Now()
	if c.activity != nil {
		c.activity.Touch(t.Namespace, t.Kind, t.Name)
	}

	e := c.load(k)
	d := c.decide(e, &t, want, now)
	if d.op == opNone {
		if d.err == nil {
			// Answered from the cache: remember it, in case the cache is stale.
			e.demand.note(now)
		}
		return d.action, d.err
	}
	return c.signal(ctx, k, &t, want)
}

type op uint8

const (
	opNone op = iota
	opCreate
	opBump
)

type decision struct {
	op     op
	action Action
	err    error
}

// within reports whether t is less than d away from now (either way, for clock skew).
func within(now, t time.Time, d time.Duration) bool {
	age := now.Sub(t)
	return age < d && age > -d
}

// decide says whether a signal for t needs a write, given the entry for its key (nil if none).
// No allocation unless it returns an error.
func (c *Client) decide(e *entry, t *Target, want int32, now time.Time) decision {
	if e == nil {
		return decision{op: opCreate}
	}
	if e.err != nil && c.errorBackoff > 0 && within(now, e.errAt, c.errorBackoff) {
		return decision{err: e.err}
	}
	sr := e.obj
	// The request's target: as the informer shows it, else as this client last wrote it.
	var ref *v1alpha1.CrossVersionObjectReference
	if sr != nil {
		ref = &sr.Spec.ScaleTargetRef
	} else if !e.wroteAt.IsZero() {
		ref = &e.wroteRef
	}
	if ref != nil && !sameTarget(ref, t) {
		return decision{err: &MismatchError{
			Namespace: t.Namespace, Name: t.Name,
			Existing: *ref, Wanted: t.Ref(),
		}}
	}
	if sr != nil && refusedAboveCap(sr) && want < specMinReplicas(sr) {
		// The owner refused the number asked; a signal asking less is a different question,
		// answered at once (each such write lowers the request, so there are few).
		return decision{op: opBump}
	}
	if idleSinceWrite(e) {
		// Served, and the target has been set back below its minimum since: whatever this
		// client wrote before, the next request needs a new signal. Concurrent calls still
		// share one write, and the write's own answer moves the generation past this one.
		return decision{op: opBump}
	}
	if !e.wroteAt.IsZero() && e.wroteMin >= want && within(now, e.wroteAt, c.window) {
		return decision{action: ActionRecentlySignalled}
	}
	if sr == nil {
		return decision{op: opCreate}
	}
	if specMinReplicas(sr) < want {
		return decision{op: opBump}
	}
	if active(sr) {
		return decision{action: ActionAlreadyActive}
	}
	if within(now, signalTime(sr), c.window) {
		if sr.Status.Phase == v1alpha1.PhaseFailed {
			return decision{action: ActionRecentlyFailed}
		}
		return decision{action: ActionAlreadyReady}
	}
	return decision{op: opBump}
}

// refusedAboveCap reports whether the latest signal was refused for asking more replicas than
// the owner allows.
func refusedAboveCap(sr *v1alpha1.ScaleRequest) bool {
	if sr.Status.ObservedGeneration != sr.Generation || sr.Status.Phase != v1alpha1.PhaseFailed {
		return false
	}
	c := condAt(sr.Status.Conditions, v1alpha1.ConditionScaled, sr.Generation)
	return c != nil && c.Status == metav1.ConditionFalse && c.Reason == v1alpha1.ReasonAboveOwnerCap
}

// idleSinceWrite reports whether the informer shows the request Idle, Draining or Asleep for a
// generation at least as new as this client's last write to it.
func idleSinceWrite(e *entry) bool {
	sr := e.obj
	if sr == nil || !down(sr.Status.Phase) || sr.Status.ObservedGeneration != sr.Generation {
		return false
	}
	return e.wroteUID == "" || e.wroteUID != sr.UID || sr.Generation >= e.wroteGen
}

// down reports whether a phase means the target has, or is about to have, fewer replicas than
// the request asks, so that only a new signal brings them back: Idle (set back by something
// else), Draining (the controller is putting it to sleep; a signal calls that off) and Asleep.
func down(phase v1alpha1.ScaleRequestPhase) bool {
	return phase == v1alpha1.PhaseIdle || phase == v1alpha1.PhaseDraining || phase == v1alpha1.PhaseAsleep
}

// signal runs the shared write for k and returns its action. After the write it decides again
// for this caller, whose target or minReplicas may differ from the one the write served.
func (c *Client) signal(ctx context.Context, k key, t *Target, want int32) (Action, error) {
	sfKey := k.String()
	target := *t
	action := ActionNone
	for range 3 {
		ch := c.sf.DoChan(sfKey, func() (any, error) { return c.write(k, target, want) })
		select {
		case r := <-ch:
			if r.Err != nil {
				return ActionNone, r.Err
			}
			action = r.Val.(Action)
		case <-ctx.Done():
			return ActionNone, ctx.Err()
		}
		d := c.decide(c.load(k), t, want, c.clock.Now())
		if d.err != nil {
			return ActionNone, d.err
		}
		if d.op == opNone {
			return action, nil
		}
	}
	return action, nil
}

// write is the body of a shared write: it decides again under the latest state, then creates or
// bumps, and records the outcome for later decisions.
func (c *Client) write(k key, t Target, want int32) (any, error) {
	c.lifeMu.Lock()
	if c.stopping {
		c.lifeMu.Unlock()
		return nil, ErrStopped
	}
	c.wg.Add(1)
	runCtx := c.runCtx
	c.lifeMu.Unlock()
	defer c.wg.Done()

	ctx, cancel := context.WithTimeout(runCtx, c.writeTimeout)
	defer cancel()

	now := c.clock.Now()
	e := c.load(k)
	d := c.decide(e, &t, want, now)
	var cur *v1alpha1.ScaleRequest
	if e != nil {
		cur = e.obj
	}
	if d.op == opNone {
		if d.err != nil {
			return nil, d.err
		}
		return d.action, nil
	}

	var (
		action Action
		resp   *v1alpha1.ScaleRequest
		err    error
	)
	if d.op == opBump {
		action = ActionBumped
		resp, err = c.bump(ctx, k, cur, want, now)
		switch {
		case apierrors.IsNotFound(err) && !isNoResource(err): // deleted since the cache saw it
			d.op = opCreate
		case apierrors.IsConflict(err):
			action, resp, err = ActionAlreadyActive, nil, nil
		}
	}
	if d.op == opCreate {
		action = ActionCreated
		resp, err = c.create(ctx, k, &t, want, now)
		if apierrors.IsAlreadyExists(err) {
			action, resp, err = ActionAlreadyActive, nil, nil
		}
	}
	if err != nil {
		err = fmt.Errorf("wake %s: %w", t.String(), err)
	}
	c.record(k, &t, now, want, resp, err)
	if err != nil {
		return nil, err
	}
	return action, nil
}

// isNoResource reports a 404 for the resource itself (the CRD is not installed), as opposed to
// a missing object.
func isNoResource(err error) bool {
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		return false
	}
	d := se.Status().Details
	return d == nil || d.Name == ""
}

func (c *Client) create(ctx context.Context, k key, t *Target, want int32, now time.Time) (*v1alpha1.ScaleRequest, error) {
	at := metav1.NewMicroTime(now)
	sr := &v1alpha1.ScaleRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: k.namespace, Name: k.name, Labels: c.labels},
		Spec: v1alpha1.ScaleRequestSpec{
			ScaleTargetRef: t.Ref(),
			MinReplicas:    want,
			RequestedAt:    &at,
		},
	}
	return c.client.ZerowakeV1alpha1().ScaleRequests(k.namespace).Create(ctx, sr, metav1.CreateOptions{FieldManager: c.fieldManager})
}

type bumpSpec struct {
	MinReplicas *int32           `json:"minReplicas,omitempty"`
	RequestedAt metav1.MicroTime `json:"requestedAt"`
}

type bumpPatch struct {
	Spec bumpSpec `json:"spec"`
}

// bump sets spec.requestedAt with a JSON merge patch (no resourceVersion, so no conflicts). It
// raises spec.minReplicas when want is higher, and lowers it only when the latest signal was
// refused above the owner's cap: otherwise a route asking fewer replicas would take away what
// another route asked for.
func (c *Client) bump(ctx context.Context, k key, cur *v1alpha1.ScaleRequest, want int32, now time.Time) (*v1alpha1.ScaleRequest, error) {
	p := bumpPatch{Spec: bumpSpec{RequestedAt: metav1.NewMicroTime(now)}}
	if cur == nil || specMinReplicas(cur) < want || (refusedAboveCap(cur) && want < specMinReplicas(cur)) {
		p.Spec.MinReplicas = &want
	}
	body, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return c.client.ZerowakeV1alpha1().ScaleRequests(k.namespace).Patch(ctx, k.name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: c.fieldManager})
}

// record remembers the outcome of a write. A failed write for a key with no object and no
// earlier write of this client is remembered only for ErrorBackoff (see forgetExpiredLocked).
func (c *Client) record(k key, t *Target, now time.Time, want int32, resp *v1alpha1.ScaleRequest, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forgetExpiredLocked(now)
	c.updateLocked(k, func(e *entry) {
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				e.err, e.errAt = err, now
			}
			return
		}
		e.err, e.errAt = nil, time.Time{}
		e.wroteAt, e.wroteMin, e.wroteRef = now, want, t.Ref()
		if resp != nil {
			e.wroteGen, e.wroteUID = resp.Generation, resp.UID
		} else {
			e.wroteGen, e.wroteUID = 0, ""
		}
	})
	if e := c.load(k); err != nil && e.obj == nil && e.wroteAt.IsZero() {
		if e.err == nil || c.errorBackoff <= 0 {
			c.entries.Delete(k) // nothing worth remembering
		} else {
			c.failedOnly = append(c.failedOnly, failedKey{k, now})
		}
	}
}

// failedKey is a key whose only memory is a failed write made at errAt.
type failedKey struct {
	k     key
	errAt time.Time
}

// forgetExpiredLocked drops the entries that hold only a failed write whose backoff has passed.
// Failed writes are recorded in time order, so the expired ones are at the front. Between two
// writes at most the failures of one backoff period stay; each failure is one API call, which
// the client's rate limits bound. c.mu is held.
func (c *Client) forgetExpiredLocked(now time.Time) {
	i := 0
	for ; i < len(c.failedOnly); i++ {
		f := c.failedOnly[i]
		if now.Sub(f.errAt) < c.errorBackoff {
			break
		}
		if e := c.load(f.k); e != nil && e.obj == nil && e.wroteAt.IsZero() && e.errAt.Equal(f.errAt) {
			c.entries.Delete(f.k)
		}
	}
	if i > 0 {
		c.failedOnly = append(c.failedOnly[:0], c.failedOnly[i:]...)
	}
}

// load returns the entry for k, or nil. Lock-free and allocation-free.
func (c *Client) load(k key) *entry {
	v, _ := c.entries.Load(k)
	e, _ := v.(*entry)
	return e
}

// updateLocked stores a modified copy of k's entry (a new one if there is none). c.mu is held.
func (c *Client) updateLocked(k key, modify func(e *entry)) {
	var next entry
	if cur := c.load(k); cur != nil {
		next = *cur
	} else {
		next.demand = &demandMark{}
	}
	modify(&next)
	c.entries.Store(k, &next)
}

// notifyLocked wakes every waiter of k. c.mu is held.
func (c *Client) notifyLocked(k key) {
	if ch, ok := c.waiters[k]; ok {
		close(ch)
		delete(c.waiters, k)
	}
}

func (c *Client) onUpsert(sr *v1alpha1.ScaleRequest) {
	k := key{sr.Namespace, sr.Name}
	c.mu.Lock()
	lost := false
	c.updateLocked(k, func(e *entry) {
		e.obj = sr
		if demandLost(e) {
			lost, e.resignalledGen = true, sr.Generation
		}
	})
	c.notifyLocked(k)
	c.mu.Unlock()
	if c.onChange != nil {
		c.onChange(sr, false)
	}
	if lost {
		c.resignal(k, sr)
	}
}

// demandLost reports whether the informer now shows the request Idle for its latest signal
// (the controller saw the target set back to zero), or Draining (the controller decided to put
// it to sleep), while a caller was answered from the cache at or after that moment, less
// DemandSkew, and this client has not re-signalled for it yet. A re-signal of a Draining
// request calls the sleep off: the target was in use after all.
func demandLost(e *entry) bool {
	sr := e.obj
	if (sr.Status.Phase != v1alpha1.PhaseIdle && sr.Status.Phase != v1alpha1.PhaseDraining) ||
		sr.Status.ObservedGeneration != sr.Generation || e.resignalledGen == sr.Generation {
		return false
	}
	ready := condAt(sr.Status.Conditions, v1alpha1.ConditionReady, sr.Generation)
	if ready == nil || ready.Status != metav1.ConditionFalse ||
		(ready.Reason != v1alpha1.ReasonTargetScaledDown && ready.Reason != v1alpha1.ReasonDraining) {
		return false
	}
	at := e.demand.at.Load()
	return at != 0 && at >= ready.LastTransitionTime.Add(-DemandSkew).UnixNano()
}

// resignal signals the request's own target again, in the background: demand was answered
// from a cache that had not seen the target go back to zero.
func (c *Client) resignal(k key, sr *v1alpha1.ScaleRequest) {
	ref := sr.Spec.ScaleTargetRef
	t := Target{Namespace: sr.Namespace, APIVersion: ref.APIVersion, Kind: ref.Kind, Name: ref.Name, MinReplicas: specMinReplicas(sr)}
	c.lifeMu.Lock()
	if c.stopping || c.runCtx == nil {
		c.lifeMu.Unlock()
		return
	}
	c.wg.Add(1)
	ctx := c.runCtx
	c.lifeMu.Unlock()
	go func() {
		defer c.wg.Done()
		// One shared write, not signal's loop: the demand it restores is the caller's, already
		// answered; deciding again after the write would take later state (the new signal going
		// Idle with no demand since) for new demand. A failure is remembered for ErrorBackoff
		// like any other; the next caller retries.
		select {
		case <-c.sf.DoChan(k.String(), func() (any, error) { return c.write(k, t, t.MinReplicas) }):
		case <-ctx.Done():
		}
	}()
}

func (c *Client) onDelete(d cache.DeletedObject[*v1alpha1.ScaleRequest]) {
	n := d.GetObjectName()
	k := key{n.Namespace, n.Name}
	if c.onChange != nil && d.OptionalObj != nil {
		defer c.onChange(d.OptionalObj, true)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.notifyLocked(k)
	e := c.load(k)
	if e == nil {
		return
	}
	// Keep the memory of a write to a newer object (deleted, then re-created by this client
	// before the delete event arrived); forget everything else.
	if d.OptionalObj != nil && e.wroteUID != "" && e.wroteUID != d.OptionalObj.UID {
		c.updateLocked(k, func(e *entry) { e.obj = nil })
		return
	}
	c.entries.Delete(k)
}

func stripManagedFields(obj any) (any, error) {
	// Objects come freshly decoded from the watch; write only when there is something to drop
	// (fake clientsets hand out objects they still share).
	if sr, ok := obj.(*v1alpha1.ScaleRequest); ok && sr.ManagedFields != nil {
		sr.ManagedFields = nil
	}
	return obj, nil
}
