// Command testapp is the workload of the real-node tests: a small HTTP server whose answers
// show that the application itself answered, not a proxy in front of it.
//
//	GET /        200, "testapp POD\n" where POD is the hostname (the pod's name)
//	GET /readyz  200 once ready, 503 before
//
// PORT (default 8080) is where it listens. START_DELAY (a Go duration, default 0) is how long
// it takes to start: it listens at once but answers /readyz with 503 until the delay has
// passed, as a slow application would, so a readiness probe sees the delay.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(1)
	}
}

func run() error {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	var delay time.Duration
	if s := os.Getenv("START_DELAY"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("START_DELAY: %w", err)
		}
		delay = d
	}
	hostname, err := os.Hostname()
	if err != nil {
		return err
	}
	app := &app{hostname: hostname}
	time.AfterFunc(delay, func() { app.ready.Store(true) })

	l, err := net.Listen("tcp", ":"+port)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: app.routes(), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		// The kubelet's grace period is 30s by default; in-flight requests need far less.
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	fmt.Fprintf(os.Stderr, "testapp: %s listening on :%s, ready after %s\n", hostname, port, delay)
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

type app struct {
	hostname string
	ready    atomic.Bool
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "testapp %s\n", a.hostname)
	})
	return mux
}
