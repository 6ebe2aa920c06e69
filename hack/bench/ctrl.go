package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zerowake/zerowake/e2e/framework"
)

// startController runs a fresh controller process and waits until it leads.
func (b *bench) startController(ctx context.Context) error {
	b.ctrlN++
	t := time.Now()
	ctrl, err := framework.StartController(ctx, framework.ControllerOptions{
		Name: fmt.Sprintf("bench-%d", b.ctrlN), Binary: b.binary, Config: b.ctrlCfg, Dir: b.cluster.Dir(), Args: b.ctrlArgs,
	})
	if err != nil {
		return err
	}
	b.ctrl = ctrl
	// The previous controller released the lease on SIGTERM, so the new one takes it on its
	// first try; wait for that rather than time a wake against an election.
	leases := b.kube.CoordinationV1().Leases("zerowake-system")
	err = poll(ctx, 60*time.Second, 50*time.Millisecond, "the controller to take the leader lease", func(ctx context.Context) (bool, error) {
		l, err := leases.Get(ctx, "zerowake-controller", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" || *l.Spec.HolderIdentity == b.holder {
			return false, nil
		}
		b.holder = *l.Spec.HolderIdentity
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("%w\ncontroller log:\n%s", err, ctrl.Tail(20))
	}
	logf("controller %s (pid %d) leads after %s", ctrl.Name, ctrl.Pid(), time.Since(t).Round(time.Millisecond))
	return nil
}

func (b *bench) stopController() {
	if b.ctrl == nil {
		return
	}
	if !b.ctrl.Stop(30 * time.Second) {
		logf("controller %s did not stop within 30s after SIGTERM; killed", b.ctrl.Name)
	}
	b.ctrl = nil
}

// memReading is one reading of the controller's memory metrics.
type memReading struct {
	RSSMiB      float64 `json:"rss_mib"`
	HeapMiB     float64 `json:"heap_mib"`
	PreGCRSSMiB float64 `json:"pre_gc_rss_mib"`
	PreGCHeap   float64 `json:"pre_gc_heap_mib"`
	Goroutines  float64 `json:"goroutines"`
}

// readMemory waits settle, reads the metrics, forces a GC (through pprof's heap endpoint),
// waits for the process to settle again and reads them again; the second reading is the figure.
func (b *bench) readMemory(ctx context.Context, label string) (memReading, error) {
	var m memReading
	if err := sleep(ctx, b.cfg.settle); err != nil {
		return m, err
	}
	pre, err := scrape(ctx, b.ctrl.Ops)
	if err != nil {
		return m, err
	}
	m.PreGCRSSMiB = round2(metricValue(pre, "process_resident_memory_bytes") / (1 << 20))
	m.PreGCHeap = round2(metricValue(pre, "go_memstats_heap_inuse_bytes") / (1 << 20))
	path := ""
	if b.cfg.profileDir != "" {
		path = fmt.Sprintf("%s/heap-%s.pb.gz", b.cfg.profileDir, label)
	}
	if err := fetchProfile(ctx, b.ctrl.Ops, "/debug/pprof/heap?gc=1", path); err != nil {
		return m, err
	}
	if err := sleep(ctx, 2*time.Second); err != nil {
		return m, err
	}
	// The median of three readings a second apart.
	var rss, heap []float64
	for i := range 3 {
		if i > 0 {
			if err := sleep(ctx, time.Second); err != nil {
				return m, err
			}
		}
		all, err := scrape(ctx, b.ctrl.Ops)
		if err != nil {
			return m, err
		}
		rss = append(rss, metricValue(all, "process_resident_memory_bytes")/(1<<20))
		heap = append(heap, metricValue(all, "go_memstats_heap_inuse_bytes")/(1<<20))
		m.Goroutines = metricValue(all, "go_goroutines")
	}
	sort.Float64s(rss)
	sort.Float64s(heap)
	m.RSSMiB, m.HeapMiB = round2(rss[1]), round2(heap[1])
	logf("memory %s: rss %.1f MiB, heap in use %.1f MiB (before GC: %.1f / %.1f), %v goroutines",
		label, m.RSSMiB, m.HeapMiB, m.PreGCRSSMiB, m.PreGCHeap, m.Goroutines)
	return m, nil
}

// fetchProfile GETs a pprof endpoint of the controller and saves the body to path ("" discards it).
func fetchProfile(ctx context.Context, ops, endpoint, path string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ops+endpoint, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s (is --enable-pprof set?)", endpoint, resp.Status)
	}
	if path == "" {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

// saveProfile saves the controller's current pprof profile of that kind as
// <profile-dir>/<kind>-<label>.pb.gz when profiling is on; a failure is only logged.
func (b *bench) saveProfile(ctx context.Context, kind, label string) {
	if b.cfg.profileDir == "" {
		return
	}
	path := fmt.Sprintf("%s/%s-%s.pb.gz", b.cfg.profileDir, kind, label)
	if err := fetchProfile(ctx, b.ctrl.Ops, "/debug/pprof/"+kind, path); err != nil {
		logf("%s profile %s: %v", kind, label, err)
		return
	}
	logf("saved %s", path)
}

// cpuProfile starts a CPU profile of the controller for d when profiling is on; the returned
// function waits for it to be saved.
func (b *bench) cpuProfile(ctx context.Context, label string, d time.Duration) func() {
	if b.cfg.profileDir == "" {
		return func() {}
	}
	done := make(chan struct{})
	path := fmt.Sprintf("%s/cpu-%s.pb.gz", b.cfg.profileDir, label)
	go func() {
		defer close(done)
		if err := fetchProfile(ctx, b.ctrl.Ops, fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(d.Seconds())), path); err != nil {
			logf("cpu profile %s: %v", label, err)
			return
		}
		logf("saved %s", path)
	}()
	return func() { <-done }
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
