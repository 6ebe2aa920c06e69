package gate

import (
	"context"
	"sync"
	"time"

	"github.com/zerowake/zerowake/wake"
)

// fakeWaker plays the wake client: per target, a status, and what WaitReady does once woken.
type fakeWaker struct {
	mu      sync.Mutex
	targets map[string]*fakeTarget
	wakes   map[string]int
	waits   map[string]int
}

type fakeTarget struct {
	status wake.Status
	// wakeErr is returned by Wake; action by Wake when wakeErr is nil.
	wakeErr error
	action  wake.Action
	// ready is closed when the target becomes ready; waitErr, when set, is returned at once.
	ready   chan struct{}
	waitErr error
}

func newFakeWaker() *fakeWaker {
	return &fakeWaker{targets: map[string]*fakeTarget{}, wakes: map[string]int{}, waits: map[string]int{}}
}

func (f *fakeWaker) target(t wake.Target) *fakeTarget {
	f.mu.Lock()
	defer f.mu.Unlock()
	ft, ok := f.targets[t.String()]
	if !ok {
		ft = &fakeTarget{ready: make(chan struct{}), action: wake.ActionCreated}
		f.targets[t.String()] = ft
	}
	return ft
}

// setReady makes t's status Ready (what the informer would show).
func (f *fakeWaker) setReady(t wake.Target) {
	ft := f.target(t)
	f.mu.Lock()
	defer f.mu.Unlock()
	ft.status = wake.Status{Exists: true, Observed: true, Ready: true}
	select {
	case <-ft.ready:
	default:
		close(ft.ready)
	}
}

func (f *fakeWaker) failWith(t wake.Target, err error) {
	ft := f.target(t)
	f.mu.Lock()
	defer f.mu.Unlock()
	ft.waitErr = err
}

func (f *fakeWaker) counts(t wake.Target) (wakes, waits int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.wakes[t.String()], f.waits[t.String()]
}

func (f *fakeWaker) Demand(t wake.Target) wake.Status {
	ft := f.target(t)
	f.mu.Lock()
	defer f.mu.Unlock()
	return ft.status
}

func (f *fakeWaker) Wake(_ context.Context, t wake.Target) (wake.Action, error) {
	ft := f.target(t)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wakes[t.String()]++
	if ft.wakeErr != nil {
		return wake.ActionNone, ft.wakeErr
	}
	return ft.action, nil
}

func (f *fakeWaker) WaitReady(ctx context.Context, t wake.Target) (time.Duration, error) {
	ft := f.target(t)
	f.mu.Lock()
	f.waits[t.String()]++
	err, ready := ft.waitErr, ft.ready
	f.mu.Unlock()
	if err != nil {
		return 0, err
	}
	select {
	case <-ready:
		return time.Millisecond, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
