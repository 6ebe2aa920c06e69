package gate

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// A leaving replica, played with a real listener: what a proxy sees at each step.

// leavingServer serves handler with leaving until the test stops it.
type leavingServer struct {
	*Server
	url      string
	addr     string
	stop     context.CancelFunc
	hurry    chan struct{}
	done     chan error
	abandons atomic.Int32
}

// startLeavingServer serves handler; its Abandon closes abandoned.
func startLeavingServer(t *testing.T, leaving Leaving, handler http.Handler, abandoned chan struct{}) *leavingServer {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	ls := &leavingServer{url: "http://" + listener.Addr().String() + "/", addr: listener.Addr().String(), stop: stop,
		hurry: make(chan struct{}), done: make(chan error, 1)}
	leaving.Abandon = func() {
		if ls.abandons.Add(1) == 1 {
			close(abandoned)
		}
	}
	ls.Server = NewServer(leaving, logr.Discard())
	go func() { ls.done <- ls.Serve(ctx, ls.hurry, listener, handler) }()
	t.Cleanup(func() {
		stop()
		select {
		case <-ls.hurry:
		default:
			close(ls.hurry)
		}
		<-ls.done
	})
	waitFor(t, "the server to report ready once it serves", ls.Ready)
	return ls
}

func (ls *leavingServer) listening() bool {
	conn, err := net.Dial("tcp", ls.addr)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

func (ls *leavingServer) returned() bool {
	select {
	case err := <-ls.done:
		ls.done <- err
		return true
	default:
		return false
	}
}

// holdUntil is a handler that holds each call until release is closed (200) or abandoned is
// (503), the way the gate holds a call until its target is ready or the wake client stops.
func holdUntil(entered chan<- struct{}, release, abandoned <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
			w.WriteHeader(http.StatusOK)
		case <-abandoned:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
}

// heldCall sends a call in the background and returns its status (-1 for a transport error).
func heldCall(url string) <-chan int {
	status := make(chan int, 1)
	go func() {
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Get(url)
		if err != nil {
			status <- -1
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	return status
}

// On the stop signal readiness fails at once, while the listener stays open and new calls
// are still answered (each on a connection closed after its answer) for the whole delay.
func TestLeavingFailsReadinessBeforeTheListenerCloses(t *testing.T) {
	ls := startLeavingServer(t, Leaving{Delay: time.Hour, Grace: time.Hour},
		http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }), make(chan struct{}))
	ls.stop()
	waitFor(t, "readiness to fail after the stop signal", func() bool { return !ls.Ready() })

	for i := range 3 {
		resp, err := http.Get(ls.url)
		if err != nil {
			t.Fatalf("call %d during the delay: %v; the listener must stay open while proxies still choose this replica", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("call %d during the delay: %d, want 200", i, resp.StatusCode)
		}
		if !resp.Close {
			t.Errorf("call %d during the delay came without Connection: close; a proxy would keep its connection to a leaving replica", i)
		}
	}
	if ls.returned() {
		t.Fatal("Serve returned during the delay")
	}
	if ls.abandons.Load() != 0 {
		t.Error("Abandon called with no call held")
	}
}

// After the delay the listener closes, and a call held from before is still answered when its
// target becomes ready; Serve returns only then, and abandons nothing.
func TestLeavingDrainsHeldCalls(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	abandoned := make(chan struct{})
	ls := startLeavingServer(t, Leaving{Delay: 0, Grace: time.Hour}, holdUntil(entered, release, abandoned), abandoned)
	status := heldCall(ls.url)
	<-entered
	ls.stop()
	waitFor(t, "the listener to close once the (zero) delay is over", func() bool { return !ls.listening() })
	if ls.returned() {
		t.Fatal("Serve returned while a call was held")
	}
	close(release)
	if got := <-status; got != http.StatusOK {
		t.Errorf("the held call got %d, want 200: a call held when the replica stops must still pass when its target is ready", got)
	}
	if err := <-ls.done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	ls.done <- nil
	if n := ls.abandons.Load(); n != 0 {
		t.Errorf("Abandon called %d times; every call was answered within the grace", n)
	}
}

// A call still held when the grace ends is abandoned (answered 503 by the wake client's stop),
// and Serve returns.
func TestLeavingAbandonsCallsHeldPastTheGrace(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	defer close(release)
	abandoned := make(chan struct{})
	ls := startLeavingServer(t, Leaving{Delay: 0, Grace: 50 * time.Millisecond}, holdUntil(entered, release, abandoned), abandoned)
	status := heldCall(ls.url)
	<-entered
	ls.stop()
	if got := <-status; got != http.StatusServiceUnavailable {
		t.Errorf("the call held past the grace got %d, want the 503 of an abandoned call", got)
	}
	if err := <-ls.done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	ls.done <- nil
	if n := ls.abandons.Load(); n != 1 {
		t.Errorf("Abandon called %d times, want 1", n)
	}
}

// A second stop signal skips what is left of the delay and the grace: held calls are abandoned
// at once and Serve returns.
func TestSecondSignalCutsLeavingShort(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	defer close(release)
	abandoned := make(chan struct{})
	ls := startLeavingServer(t, Leaving{Delay: time.Hour, Grace: time.Hour}, holdUntil(entered, release, abandoned), abandoned)
	status := heldCall(ls.url)
	<-entered
	ls.stop()
	waitFor(t, "readiness to fail after the first signal", func() bool { return !ls.Ready() })
	if !ls.listening() || ls.returned() {
		t.Fatal("the first signal closed the listener or ended Serve; the delay is an hour")
	}
	close(ls.hurry)
	if got := <-status; got != http.StatusServiceUnavailable {
		t.Errorf("the held call got %d after the second signal, want the 503 of an abandoned call", got)
	}
	if err := <-ls.done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	ls.done <- nil
	if ls.listening() {
		t.Error("still listening after Serve returned")
	}
}
