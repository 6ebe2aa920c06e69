package gate

import (
	"context"
	"crypto/sha256"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/zerowake/zerowake/wake"
)

// Waker is the part of the wake client the gate uses (*wake.Client implements it).
type Waker interface {
	// Demand is Status that also records that a request is about to use the target, so that a
	// pass answered from a cache that has not seen a scale-down yet is corrected.
	Demand(wake.Target) wake.Status
	Wake(context.Context, wake.Target) (wake.Action, error)
	WaitReady(context.Context, wake.Target) (time.Duration, error)
}

var _ Waker = (*wake.Client)(nil)

// Defaults of Config.
const (
	DefaultTimeout           = 30 * time.Second
	DefaultMaxTimeout        = 5 * time.Minute
	DefaultRetryAfter        = 5 * time.Second
	DefaultMaxHeldPerTarget  = 10000
	DefaultMaxHeld           = 10000
	DefaultMaxTargetsInRoute = 8
	DefaultMethodHeader      = "X-Forwarded-Method"
)

// Config sets the gate's defaults and limits. The zero value uses the defaults above.
type Config struct {
	// Timeout is how long a request is held when its route sets no timeout.
	Timeout time.Duration
	// MaxTimeout caps what a route may ask for.
	MaxTimeout time.Duration
	// RetryAfter is sent with 503 answers and is the "starting up" page's refresh interval.
	RetryAfter time.Duration
	// Page is the default for routes that do not say whether browsers get the page.
	Page bool
	// MaxHeldPerTarget caps the requests held at once for one target; the next get 503, so
	// that one flooded target cannot take every slot. Negative means no cap.
	MaxHeldPerTarget int
	// MaxHeld caps the requests held at once for all targets together: it bounds the gate's
	// memory under a flood. Negative means no cap.
	MaxHeld int
	// MaxTargetsInRoute caps the targets one route may name.
	MaxTargetsInRoute int
	// ExposeDetails sends clients the answer's reason (X-Zerowake-Reason) and message
	// (namespaces, kubectl commands, the API server's words). Off, they get a fixed text per
	// outcome, and the detail goes to the log only.
	ExposeDetails bool
	// MethodHeader is the header in which the proxy passes the original request's method on
	// /auth (Traefik and Caddy: X-Forwarded-Method; nginx as configured, usually
	// X-Original-Method). The proxy must set it: a header it only copies comes from the client.
	// Default DefaultMethodHeader.
	MethodHeader string
	// AuthToken, when set, must come with every call (header X-Zerowake-Token, or the token
	// parameter of an /auth URL); calls without it get 401, no detail, and cause no write.
	AuthToken string
	// Owners, when set, is asked before every write: a target its owner has not opted in (or
	// not this far) is refused 403 with no write. Nil leaves the check to the controller.
	Owners Owners
	// Endpoints follows the Services routes name (Route.Service). Nil: a route that names a
	// Service is answered 400, since the gate could not tell when it is routable.
	Endpoints Endpoints
	// Fence, when set, says whether the gate may let calls through at all (*Membership: its
	// membership is fresh enough that the controller waits for it before a sleep). Nil: always.
	Fence Fence
	// Activity, when set, records every call let through as activity of its targets (for
	// targets that sleep when idle).
	Activity wake.ActivityRecorder
}

// Fence says whether a gate replica may let calls through; *Membership implements it.
type Fence interface{ Serving() bool }

func (c Config) withDefaults() Config {
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxTimeout <= 0 {
		c.MaxTimeout = DefaultMaxTimeout
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = DefaultRetryAfter
	}
	if c.MaxHeldPerTarget == 0 {
		c.MaxHeldPerTarget = DefaultMaxHeldPerTarget
	}
	if c.MaxHeld == 0 {
		c.MaxHeld = DefaultMaxHeld
	}
	if c.MaxTargetsInRoute <= 0 {
		c.MaxTargetsInRoute = DefaultMaxTargetsInRoute
	}
	if c.MethodHeader == "" {
		c.MethodHeader = DefaultMethodHeader
	}
	return c
}

// Gate answers "may this request go through?" for routes whose targets may be idle.
type Gate struct {
	waker   Waker
	cfg     Config
	metrics *Metrics
	logger  logr.Logger

	// tokenDigest is the SHA-256 of Config.AuthToken, nil when calls need no token.
	tokenDigest []byte
	// logLimit bounds the Info logs callers can cause.
	logLimit *rate.Limiter

	heldMu sync.Mutex
	// held counts the requests held per target; a target is removed when none are held, so
	// the map is as large as the set of targets being woken right now.
	held map[targetKey]int
	// heldTotal counts the requests held, each once however many targets it waits for.
	heldTotal int
}

type targetKey struct{ namespace, kind, name string }

func keyOf(t wake.Target) targetKey { return targetKey{t.Namespace, t.Kind, t.Name} }

// New returns a gate over waker. metrics may be nil (nothing is recorded).
func New(waker Waker, cfg Config, metrics *Metrics, logger logr.Logger) *Gate {
	g := &Gate{waker: waker, cfg: cfg.withDefaults(), metrics: metrics, logger: logger, held: map[targetKey]int{},
		logLimit: rate.NewLimiter(10, 20)}
	if cfg.AuthToken != "" {
		d := sha256.Sum256([]byte(cfg.AuthToken))
		g.tokenDigest = d[:]
	}
	return g
}

// Check decides one forward-auth call for route. method and accept are the original
// request's, for the page decision. It returns at once when every target is ready (no API
// call, no write), and otherwise wakes the targets and holds until they are all ready, the
// route's timeout passes, a target is refused or fails, or ctx ends.
func (g *Gate) Check(ctx context.Context, route *Route, method, accept string) Answer {
	a, held := g.check(ctx, route, method, accept)
	g.metrics.observe(a.Outcome, held)
	return a
}

func (g *Gate) check(ctx context.Context, route *Route, method, accept string) (Answer, time.Duration) {
	statuses := make([]wake.Status, len(route.Targets))
	for i, t := range route.Targets {
		statuses[i] = g.waker.Demand(t)
	}
	routable, refused := g.routable(route)
	if refused != nil {
		return *refused, -1
	}
	if allReady(statuses) && routable {
		if !g.serving() {
			return g.fenced(), -1
		}
		g.touch(route)
		return Answer{Outcome: OutcomeAwake}, -1
	}

	// A page load is not held, but its Wake calls may wait for a write: it takes a slot too, so
	// that --max-held bounds every call that can reach the API server.
	if !g.acquire(route.Targets) {
		return Answer{Outcome: OutcomeOverflow, Reason: "TooManyHeld", RetryAfter: g.cfg.RetryAfter,
			Message: "too many requests are already waiting (for " + describeAll(route.Targets) + " or in all); retry shortly"}, -1
	}
	defer g.release(route.Targets)
	if wantsPage(route, method, accept) {
		return g.page(ctx, route, statuses), -1
	}
	g.metrics.holding(1)
	defer g.metrics.holding(-1)

	start := time.Now()
	routeCtx, cancel := context.WithTimeout(ctx, route.Timeout)
	defer cancel()
	a := g.wakeAndWaitAll(routeCtx, ctx, route, statuses)
	if a.Outcome.Passes() && route.Service != nil {
		// The targets are ready; the proxy reaches them only once the slices list them.
		a = g.waitRoutable(routeCtx, ctx, route)
	}
	if a.Outcome.Passes() {
		if !g.serving() {
			return g.fenced(), time.Since(start)
		}
		g.touch(route)
	}
	return a, time.Since(start)
}

// serving reports whether the gate's fence lets calls through.
func (g *Gate) serving() bool { return g.cfg.Fence == nil || g.cfg.Fence.Serving() }

// fenced is the answer of a gate whose membership is too old to let calls through: the
// controller may be putting a target to sleep without waiting for it.
func (g *Gate) fenced() Answer {
	return Answer{Outcome: OutcomeUnavailable, Reason: "GateFenced", RetryAfter: g.cfg.RetryAfter,
		Message: "this gate could not renew its membership lease, so it lets no call through; retry"}
}

// touch records a call let through as activity of the route's targets: a cache lookup each, and
// at most one write per target per interval.
func (g *Gate) touch(route *Route) {
	if g.cfg.Activity == nil {
		return
	}
	for _, t := range route.Targets {
		g.cfg.Activity.Touch(t.Namespace, t.Kind, t.Name)
	}
}

// wakeAndWaitAll wakes the route's targets that are not ready and waits for every one.
func (g *Gate) wakeAndWaitAll(ctx, callerCtx context.Context, route *Route, statuses []wake.Status) Answer {
	if len(route.Targets) == 1 {
		return g.wakeAndWait(ctx, callerCtx, route, route.Targets[0], statuses[0].Ready)
	}
	// A group: every target is woken at once; the first that cannot be served ends the wait
	// for the others.
	answers := make([]Answer, len(route.Targets))
	groupCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	for i, t := range route.Targets {
		wg.Go(func() {
			answers[i] = g.wakeAndWait(groupCtx, callerCtx, route, t, statuses[i].Ready)
			if !answers[i].Outcome.Passes() {
				stop()
			}
		})
	}
	wg.Wait()
	a := worst(answers)
	a.Targets = describeAll(route.Targets)
	return a
}

// wakeAndWait signals one target (unless it is already ready) and waits for it.
func (g *Gate) wakeAndWait(ctx, callerCtx context.Context, route *Route, t wake.Target, ready bool) Answer {
	var err error
	if !ready {
		if a, refused := g.ownerRefuses(ctx, callerCtx, route, t); refused {
			return a
		}
		_, err = g.waker.Wake(ctx, t)
	}
	if err == nil {
		_, err = g.waker.WaitReady(ctx, t)
	}
	if err != nil {
		return answerFor(t, err, ctx.Err(), callerCtx.Err(), route, g.cfg.RetryAfter)
	}
	return Answer{Outcome: OutcomeWoken}
}

// page wakes the targets that are not ready and answers at once with the "starting up" page,
// unless a target is refused already (then the refusal, so that the page does not refresh
// forever).
func (g *Gate) page(ctx context.Context, route *Route, statuses []wake.Status) Answer {
	wctx, cancel := context.WithTimeout(ctx, route.Timeout)
	defer cancel()
	for i, t := range route.Targets {
		if statuses[i].Ready {
			continue
		}
		if a, refused := g.ownerRefuses(wctx, ctx, route, t); refused {
			return a
		}
		action, err := g.waker.Wake(wctx, t)
		if err == nil && action == wake.ActionRecentlyFailed {
			// The latest signal failed and is fresh: WaitReady returns its error at once.
			_, err = g.waker.WaitReady(wctx, t)
		}
		if err != nil {
			if a := answerFor(t, err, wctx.Err(), ctx.Err(), route, g.cfg.RetryAfter); !a.Outcome.Passes() {
				return a
			}
		}
	}
	return Answer{Outcome: OutcomePage, RetryAfter: g.cfg.RetryAfter, Reason: "Starting",
		Message: describeAll(route.Targets) + " is starting", Targets: describeAll(route.Targets)}
}

// ownerRefuses asks Config.Owners whether t may be signalled, and returns the answer when not.
func (g *Gate) ownerRefuses(ctx, callerCtx context.Context, route *Route, t wake.Target) (Answer, bool) {
	if g.cfg.Owners == nil {
		return Answer{}, false
	}
	reason, err := g.cfg.Owners.Refusal(ctx, t)
	switch {
	case err != nil:
		a := answerFor(t, err, ctx.Err(), callerCtx.Err(), route, g.cfg.RetryAfter)
		if a.Reason == "SignalFailed" {
			a.Reason, a.Message = "OwnerCheckFailed", "could not read the owner's opt-in of "+describe(t)+": "+err.Error()
		}
		return a, true
	case reason != "":
		return Answer{Outcome: OutcomeRefused, Reason: reason, Message: ownerRefusalMessage(t, reason)}, true
	}
	return Answer{}, false
}

// acquire takes a held slot on every target, or none when the gate or one of them is full.
func (g *Gate) acquire(targets []wake.Target) bool {
	g.heldMu.Lock()
	defer g.heldMu.Unlock()
	if overCap(g.heldTotal, g.cfg.MaxHeld) {
		return false
	}
	for _, t := range targets {
		if overCap(g.held[keyOf(t)], g.cfg.MaxHeldPerTarget) {
			return false
		}
	}
	for _, t := range targets {
		g.held[keyOf(t)]++
	}
	g.heldTotal++
	return true
}

func (g *Gate) release(targets []wake.Target) {
	g.heldMu.Lock()
	defer g.heldMu.Unlock()
	g.heldTotal--
	for _, t := range targets {
		k := keyOf(t)
		if g.held[k] <= 1 {
			delete(g.held, k)
		} else {
			g.held[k]--
		}
	}
}

// Held returns the number of requests held now for t.
func (g *Gate) Held(t wake.Target) int {
	g.heldMu.Lock()
	defer g.heldMu.Unlock()
	return g.held[keyOf(t)]
}

// Metrics are the gate's Prometheus metrics. Every label has a fixed set of values.
type Metrics struct {
	answers  *prometheus.CounterVec
	holdTime *prometheus.HistogramVec
	heldNow  prometheus.Gauge
}

// NewMetrics registers the gate's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zerowake", Subsystem: "gate", Name: "answers_total",
			Help: "Forward-auth calls answered, by outcome: awake, woken, page, refused, timeout, failed, overflow, bad_route, unavailable, canceled, unauthorized.",
		}, []string{"outcome"}),
		holdTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "zerowake", Subsystem: "gate", Name: "hold_seconds",
			Help:    "How long calls were held while their targets woke, by outcome.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"outcome"}),
		heldNow: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "zerowake", Subsystem: "gate", Name: "held_requests",
			Help: "Calls being held now while their targets wake.",
		}),
	}
	reg.MustRegister(m.answers, m.holdTime, m.heldNow)
	// Every outcome is exported from the start, so rates and alerts see zeros, not gaps.
	for _, o := range outcomeNames {
		m.answers.WithLabelValues(o)
	}
	return m
}

func (m *Metrics) observe(o Outcome, held time.Duration) {
	if m == nil {
		return
	}
	m.answers.WithLabelValues(o.String()).Inc()
	if held >= 0 {
		m.holdTime.WithLabelValues(o.String()).Observe(held.Seconds())
	}
}

func (m *Metrics) holding(delta float64) {
	if m != nil {
		m.heldNow.Add(delta)
	}
}
