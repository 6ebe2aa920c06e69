package sleep

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/zerowake/zerowake/hack/localcluster"
)

// idlerSpread is how far around the outside idler's scale to zero the racing calls of a cycle
// are sent: from idlerSpread before its PATCH to idlerSpread after.
const idlerSpread = 100 * time.Millisecond

// sentAfter notes the calls sent after the idler's PATCH had returned, i.e. while the target's
// replicas were already 0: by path, how long after the PATCH each was sent.
type sentAfter struct {
	mu    sync.Mutex
	paths map[string]time.Duration
}

func (s *sentAfter) note(path string, patched time.Time) {
	s.mu.Lock()
	s.paths[path] = time.Since(patched)
	s.mu.Unlock()
}

// idlerCycles drives cycles of a target that an outside idler puts to sleep: a call wakes it
// (or finds it up), and a moment later the idler scales it to zero with one plain PATCH of
// /scale, as idlers that are not the gate's controller do, while calls are sent at random from
// idlerSpread before that PATCH to idlerSpread after it, each on a connection of its own.
func idlerCycles(t *testing.T, ns, name, site string, cycles, racers int, o *outcome, after *sentAfter) {
	zero := []byte(`{"spec":{"replicas":0}}`)
	var lastPatched time.Time
	for i := range cycles {
		path := "/cycle-" + strconv.Itoa(i)
		if i > 0 {
			after.note(path, lastPatched)
		}
		o.call(site, path)
		time.Sleep(100*time.Millisecond + rand.N(300*time.Millisecond))
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			patched time.Time // when the PATCH returned; zero until then
		)
		start := time.Now()
		for j := range racers {
			path := "/race-" + strconv.Itoa(i) + "-" + strconv.Itoa(j)
			wg.Go(func() {
				time.Sleep(rand.N(2 * idlerSpread))
				mu.Lock()
				if !patched.IsZero() {
					after.note(path, patched)
				}
				mu.Unlock()
				o.call(site, path)
			})
		}
		time.Sleep(idlerSpread - time.Since(start))
		if _, err := kube.AppsV1().Deployments(ns).Patch(context.Background(), name, types.MergePatchType, zero, metav1.PatchOptions{}, "scale"); err != nil {
			t.Errorf("the idler's PATCH of %s/scale: %v", name, err)
		}
		mu.Lock()
		patched = time.Now()
		mu.Unlock()
		lastPatched = patched
		wg.Wait()
	}
}

// TestOutsideIdlerLosesCalls is the control of TestSleepWakeRace: it shows that the race
// test's detectors — calls lost, calls the backend served while its target was at zero or had
// nothing ready — fire when sleeping is unsafe. The same harness (the controller, two gates
// behind Caddy, kwok pods, the witness) fronts three plain workloads that do not ask to sleep
// (no idle-after: the controller never lowers them), and an outside idler puts them to sleep
// the way tools beside a scale-from-zero gate do it, one PATCH of /scale to 0, with calls
// arriving at random around that moment. The gate keeps answering 200 on the Ready it holds
// until the controller has seen the scale and said otherwise, so calls sent in that gap reach
// a target at zero. Only calls sent after the PATCH had returned make the proof: a call let
// through just before the scale and read by the witness just after it would show the
// witness's lag, not an unsafe sleep.
//
// It runs always: the gap is the controller's and the gate's informers plus a status write
// (here, the latest call served at zero was sent 27–74ms after the PATCH returned), and with
// eight calls spread over 100ms either side of each of 18 PATCHes, every one of 12 runs saw
// 9–26 calls sent after the PATCH served at zero. In this harness the backend never goes
// away, so a call let through at zero is served rather than lost: the witness's count stands
// for the calls real pods would lose.
func TestOutsideIdlerLosesCalls(t *testing.T) {
	ns := localcluster.NewNamespace(t, cluster)
	const cycles, racers = 6, 8
	type target struct {
		name  string
		o     outcome
		w     *witness
		site  string
		after sentAfter
	}
	targets := []*target{{name: "plain-1"}, {name: "plain-2"}, {name: "plain-3"}}
	for _, tg := range targets {
		createWorkload(t, ns, tg.name, nil)
		tg.w = newWitness(t, ns, tg.name)
		tg.site = startCaddy(t, ns, tg.name, tg.w)
		tg.after.paths = map[string]time.Duration{}
	}
	sleepsBefore := metric(t, "zerowake_sleeps_total")
	start := time.Now()
	var wg sync.WaitGroup
	for _, tg := range targets {
		wg.Go(func() { idlerCycles(t, ns, tg.name, tg.site, cycles, racers, &tg.o, &tg.after) })
	}
	wg.Wait()
	took := time.Since(start)

	if sleeps := metric(t, "zerowake_sleeps_total") - sleepsBefore; sleeps != 0 {
		t.Errorf("the controller put %.0f workloads to sleep, though none asked: the idler alone must lower them", sleeps)
	}
	var lost, atZero, unready, afterSent, afterUnsafe int64
	var latestUnsafe time.Duration
	for _, tg := range targets {
		lost += tg.o.lost.Load()
		atZero += tg.w.atZero.Load()
		unready += tg.w.unready.Load()
		tg.w.mu.Lock()
		for path, since := range tg.after.paths {
			afterSent++
			if tg.w.unsafe[path] {
				afterUnsafe++
				latestUnsafe = max(latestUnsafe, since)
			}
		}
		tg.w.mu.Unlock()
		t.Logf("%s: %d calls, %d answered by the backend, %d lost; the backend saw %d, %d at 0 replicas, %d with none ready: %v",
			tg.name, tg.o.sent.Load(), tg.o.ok.Load(), tg.o.lost.Load(), tg.w.served.Load(), tg.w.atZero.Load(), tg.w.unready.Load(), tg.w.violations)
	}
	t.Logf("%s: %d cycles of %d workloads; %d lost, %d served at 0 replicas, %d with none ready; of the %d calls sent after the idler's PATCH had returned, %d were served unsafely, the latest sent %s after it",
		took.Round(time.Second), cycles, len(targets), lost, atZero, unready, afterSent, afterUnsafe, latestUnsafe.Round(time.Millisecond))
	if lost+atZero+unready == 0 {
		t.Errorf("an outside idler scaled %d workloads to zero under calls, and no call was lost or served at zero: TestSleepWakeRace's detectors would not catch an unsafe sleep", len(targets))
	}
	// A call sent once the target was already at zero and served at zero cannot have been let
	// through before the scale: the detectors saw the unsafe sleep itself, not their own lag.
	if afterUnsafe == 0 {
		t.Errorf("none of the %d calls sent after the idler's scale to zero was served at zero or unready: the detectors caught only calls let through before it", afterSent)
	}
}
