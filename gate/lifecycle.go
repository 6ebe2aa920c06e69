package gate

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

// Default shutdown timings of a gate replica (see Leaving).
const (
	DefaultShutdownDelay = 5 * time.Second
	DefaultShutdownGrace = 20 * time.Second
	// closeTimeout bounds the last step, once held calls have been answered.
	closeTimeout = 5 * time.Second
)

// Leaving says how a replica leaves when it is told to stop, so that replacing it fails no call.
// A proxy sends calls to a replica until it learns that the replica is going (Kubernetes removes
// a terminating pod from its EndpointSlices, a proxy's health check sees /readyz fail); a
// replica that closed its listener at once would refuse every call until then.
type Leaving struct {
	// Delay is how long the replica keeps answering every call, new ones included, after the
	// stop signal, while /readyz already fails: the time proxies need to stop choosing it.
	Delay time.Duration
	// Grace is how long, once the listener is closed, held calls may still see their targets
	// become ready.
	Grace time.Duration
	// Abandon answers every call still held at once (503 with Retry-After, "the gate is
	// restarting"; the wake goes on, since it is a ScaleRequest). It is called when the grace
	// ends with calls still held, or on a second stop signal.
	Abandon func()
}

// Server serves the gate's handler and leaves as Leaving says.
type Server struct {
	leaving Leaving
	server  *http.Server
	logger  logr.Logger
	serving atomic.Bool
	going   atomic.Bool
}

// NewServer returns a server that leaves as leaving says. Its Ready is false until Serve.
func NewServer(leaving Leaving, logger logr.Logger) *Server {
	return &Server{leaving: leaving, logger: logger}
}

// Ready reports whether proxies should send calls here: serving, and not told to stop. It is
// what /readyz answers.
func (s *Server) Ready() bool { return s.serving.Load() && !s.going.Load() }

// closeWhileLeaving closes each connection after its answer once the replica is going: a proxy
// that reaches the gate through a Service keeps its connections to this pod however the
// endpoints change, and only a new connection can reach another replica.
func (s *Server) closeWhileLeaving(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.going.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

// Serve answers calls on listener with handler (the gate's Handler) until stop ends, then
// leaves: /readyz fails at once, every call is still answered for the delay, then the listener
// closes and held calls are drained for the grace; calls still held then are abandoned. When
// hurry is closed (a second stop signal) what is left of the delay and the grace is skipped.
// Serve returns once every call has been answered (past the grace, once the connections are
// closed), or with the error that ended serving.
func (s *Server) Serve(stop context.Context, hurry <-chan struct{}, listener net.Listener, handler http.Handler) error {
	// No write timeout: a held call legitimately takes up to the route's timeout.
	s.server = &http.Server{Handler: s.closeWhileLeaving(handler), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}
	served := make(chan error, 1)
	go func() { served <- s.server.Serve(listener) }()
	s.serving.Store(true)
	select {
	case err := <-served:
		s.serving.Store(false)
		return err
	case <-stop.Done():
	}
	s.going.Store(true)
	s.logger.Info("Stopping: not ready, still answering every call while proxies stop choosing this replica",
		"delay", s.leaving.Delay, "grace", s.leaving.Grace)
	if !wait(s.leaving.Delay, hurry) {
		s.logger.Info("Second stop signal: skipping the delay and the grace")
	}

	s.logger.Info("Closing the listener; held calls may still become ready", "grace", s.leaving.Grace)
	drain, cancel := context.WithTimeout(context.Background(), s.leaving.Grace)
	defer cancel()
	go func() {
		select {
		case <-hurry:
			cancel()
		case <-drain.Done():
		}
	}()
	err := s.server.Shutdown(drain)
	if err == nil {
		s.logger.Info("Every call answered")
		return nil
	}
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return err
	}
	s.logger.Info("Answering the calls still held with 503: their clients are asked to retry")
	if s.leaving.Abandon != nil {
		s.leaving.Abandon()
	}
	closing, cancelClose := context.WithTimeout(context.Background(), closeTimeout)
	defer cancelClose()
	if err := s.server.Shutdown(closing); err != nil {
		return s.server.Close()
	}
	return nil
}

// wait waits for d, and reports false if hurry closed first.
func wait(d time.Duration, hurry <-chan struct{}) bool {
	if d <= 0 {
		return !hurried(hurry)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-hurry:
		return false
	}
}

func hurried(hurry <-chan struct{}) bool {
	select {
	case <-hurry:
		return true
	default:
		return false
	}
}
