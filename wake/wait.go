package wake

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
)

// Status returns the target's ScaleRequest as the informer last saw it, interpreted for t:
// Status.Exists is false when there is none (or the client is not running); Status.Mismatch
// is true, and Ready false, when the request is for another workload sharing the name; Ready
// is false when the request asks fewer replicas than t.MinReplicas.
func (c *Client) Status(t Target) Status {
	if c.running() != nil || c.resolveNamespace(&t) != nil {
		return Status{}
	}
	if e := c.load(key{t.Namespace, t.Name}); e != nil && e.obj != nil {
		return statusFor(e.obj, &t)
	}
	return Status{}
}

// WaitReady blocks until the latest signal for t is Ready and returns the cold-start duration
// the controller recorded (status.coldStartDuration; 0 if it recorded none). It returns a
// *FailedError when the controller reports the latest signal Failed, ErrDeleted when the
// ScaleRequest is deleted while waiting, ErrStopped when the client stops, a *MismatchError
// when the ScaleRequest targets another workload, and ctx.Err() when ctx ends. If no
// ScaleRequest exists yet, it waits for one.
//
// When this client wrote the latest signal, generations older than the one it wrote are
// ignored. WaitReady does not give the first signal; call Wake first. When the request turns
// Idle for the generation it waits on (the target was set back to zero before it was ready),
// WaitReady signals again, once per generation, instead of waiting for ctx to end.
func (c *Client) WaitReady(ctx context.Context, t Target) (time.Duration, error) {
	return c.WaitReadyWithProgress(ctx, t, nil)
}

// WaitReadyWithProgress is WaitReady that also calls progress (from the calling goroutine) with
// the first status it sees and then with every status that differs from the previous one,
// including the final one. Statuses of generations older than the one this client wrote are
// not reported.
func (c *Client) WaitReadyWithProgress(ctx context.Context, t Target, progress func(Status)) (time.Duration, error) {
	if err := c.running(); err != nil {
		return 0, err
	}
	if err := c.resolveNamespace(&t); err != nil {
		return 0, err
	}
	if err := t.validate(); err != nil {
		return 0, err
	}
	k := key{t.Namespace, t.Name}
	done := c.runCtx.Done()

	var (
		seen     types.UID
		last     Status
		reported bool
		// resignalled is the generation WaitReady found Idle and signalled again.
		resignalled int64
	)
	for {
		c.mu.Lock()
		var (
			sr       *v1alpha1.ScaleRequest
			lagging  bool
			wroteUID types.UID
		)
		if e := c.load(k); e != nil {
			sr, wroteUID = e.obj, e.wroteUID
			// Our own write may not have reached the informer yet.
			lagging = sr != nil && wroteUID != "" && sr.UID == wroteUID && sr.Generation < e.wroteGen
		}
		changed, ok := c.waiters[k]
		if !ok {
			changed = make(chan struct{})
			c.waiters[k] = changed
		}
		c.mu.Unlock()

		switch {
		case sr == nil:
			// Deleted, unless this client has since re-created it (and the informer lags).
			if seen != "" && (wroteUID == "" || wroteUID == seen) {
				return 0, ErrDeleted
			}
		case !sameTarget(&sr.Spec.ScaleTargetRef, &t):
			return 0, &MismatchError{Namespace: sr.Namespace, Name: sr.Name, Existing: sr.Spec.ScaleTargetRef, Wanted: t.Ref()}
		case !lagging:
			seen = sr.UID
			st := statusFor(sr, &t)
			if progress != nil && (!reported || st != last) {
				progress(st)
				last, reported = st, true
			}
			if st.Ready {
				return st.ColdStart, nil
			}
			if st.Failed {
				return 0, failedError(sr, &st)
			}
			if st.Observed && down(st.Phase) && st.Generation != resignalled {
				// The target went back below its minimum before this signal was Ready: no
				// answer will come for it. Signal again (once per generation), and wait for that.
				resignalled = st.Generation
				if _, err := c.Wake(ctx, t); err != nil {
					return 0, err
				}
				continue
			}
		}

		select {
		case <-changed:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-done:
			return 0, ErrStopped
		}
	}
}

// Demand is Status for a caller about to use the target (a gate letting a request through):
// when the answer is Ready it also records that the target was in demand now. The informer may
// not have seen the target set back to zero yet; when it then shows the request Idle for that
// signal, the client re-signals by itself (see the package documentation, "Stale answers").
// Demand never writes and does not allocate.
func (c *Client) Demand(t Target) Status {
	if c.running() != nil || c.resolveNamespace(&t) != nil {
		return Status{}
	}
	e := c.load(key{t.Namespace, t.Name})
	if e == nil || e.obj == nil {
		return Status{}
	}
	s := statusFor(e.obj, &t)
	if s.Ready {
		e.demand.note(c.clock.Now())
	}
	return s
}
