package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Results is the JSON document. Durations are in milliseconds unless the key says otherwise.
// Every ratio is to the one-PATCH floor of the same run: what a client that only PATCHes /scale
// (no ScaleRequest, no controller) takes for the same targets, timed the same way.
type Results struct {
	Floor     Floor      `json:"floor"`
	Single    Single     `json:"single"`
	Bursts    []Burst    `json:"bursts"`
	Herd      Herd       `json:"herd"`
	Sustained *Sustained `json:"sustained,omitempty"`
	Footprint Footprint  `json:"footprint"`
	Gate      *Gate      `json:"gate,omitempty"`
	Endpoints *Endpoints `json:"endpoints,omitempty"`
	Sleep     *Sleep     `json:"sleep,omitempty"`
	ColdStart *ColdStart `json:"coldstart,omitempty"`
	Env       Env        `json:"env"`
}

// Floor holds two yardsticks, both with no controller running. The one-PATCH floor: a PATCH
// of a fresh idle target's /scale, timed from being sent until this process's watch sees the
// replicas (and the Deployment ready): the least any wake can cost. The three-request floor:
// create a ScaleRequest, PATCH /scale, write the ScaleRequest's status, each timed by its
// round trip: the requests a ScaleRequest-driven wake makes.
type Floor struct {
	N             int         `json:"n"`
	PatchScaledMs Percentiles `json:"patch_scaled_ms"`
	PatchReadyMs  Percentiles `json:"patch_ready_ms"`
	CreateMs      Percentiles `json:"create_ms"`
	ScaleMs       Percentiles `json:"scale_ms"`
	StatusMs      Percentiles `json:"status_ms"`
	TotalMs       Percentiles `json:"total_ms"`
	// CPUS is the CPU seconds each process used during the rounds (see Single.CPUS).
	CPUS map[string]float64 `json:"cpu_s"`
}

// Single: sequential wakes of distinct idle Deployments. The sent_* figures run from the
// create being sent, as the floor's run from its PATCH being sent; the others from the
// create's answer.
type Single struct {
	N             int         `json:"n"`
	ScaledMs      Percentiles `json:"scaled_ms"`
	StatusMs      Percentiles `json:"status_ms"`
	ReadyMs       Percentiles `json:"ready_ms"`
	ReadyDetectMs Percentiles `json:"ready_detect_ms"`
	SentScaledMs  Percentiles `json:"sent_scaled_ms"`
	SentReadyMs   Percentiles `json:"sent_ready_ms"`
	// ScaledRatioP50 = sent_scaled_ms.p50 / floor.patch_scaled_ms.p50, and ReadyRatioP50 =
	// sent_ready_ms.p50 (the Ready condition seen) / floor.patch_ready_ms.p50 (the Deployment
	// seen ready).
	ScaledRatioP50 float64 `json:"scaled_ratio_p50"`
	ReadyRatioP50  float64 `json:"ready_ratio_p50"`
	// CPUS is the CPU seconds each process used during the scenario; "machine" counts every
	// process on the machine, so machine - total is what others took meanwhile.
	CPUS map[string]float64 `json:"cpu_s"`
}

// Burst: distinct idle Deployments woken at once (100 goroutines sending), with the
// controller's default flags, right after the one-PATCH floor of the same size. Every time
// runs from the first signal being sent.
type Burst struct {
	Deployments int `json:"deployments"`
	// FloorAllScaledS and FloorAllReadyS: the one-PATCH floor, a /scale PATCH per target sent
	// by the benchmark itself (no ScaleRequest; the controller's caches never hold these
	// targets, which carry no wake label), until every target is seen scaled and ready.
	FloorAllScaledS float64 `json:"floor_all_scaled_s"`
	FloorAllReadyS  float64 `json:"floor_all_ready_s"`
	// AllScaledS: every target seen scaled; AllReadyS: every ScaleRequest seen Ready.
	AllScaledS  float64 `json:"all_scaled_s"`
	AllReadyS   float64 `json:"all_ready_s"`
	ScaledRatio float64 `json:"scaled_ratio"`
	ReadyRatio  float64 `json:"ready_ratio"`
	ScaledPerS  float64 `json:"scaled_per_s"`
	// FloorWakeScaledMs and WakeScaledMs: each target's own time from its signal (the floor's
	// PATCH, the ScaleRequest create) being sent until it was seen scaled. Against the
	// all-scaled figures they tell a slow tail from a slow pipeline.
	FloorWakeScaledMs Percentiles `json:"floor_wake_scaled_ms"`
	WakeScaledMs      Percentiles `json:"wake_scaled_ms"`
	// CreateS is how long the benchmark took to create every ScaleRequest.
	CreateS float64 `json:"create_s"`
	// DeploymentsReadyS is when the last Deployment had a ready replica: the part of
	// all_ready_s that is the control plane's and kwok's, not the controller's.
	DeploymentsReadyS float64 `json:"deployments_ready_s"`
	// Ready counts the ScaleRequests seen Ready (all of them, or the scenario fails).
	Ready int `json:"ready"`
	// ControllerRequests are the controller's API requests during the burst, by "VERB
	// resource"; RequestsPerWake divides them by the number of targets.
	ControllerRequests map[string]float64 `json:"controller_requests"`
	RequestsPerWake    map[string]float64 `json:"requests_per_wake"`
	// CPUS and FloorCPUS are the CPU seconds each process used from the first signal until
	// every target was ready (the control plane's components, the controller, the benchmark).
	CPUS      map[string]float64 `json:"cpu_s"`
	FloorCPUS map[string]float64 `json:"floor_cpu_s"`
	// PeakRSSMiB is the controller's peak resident set (VmHWM) since it started, before
	// scenario 2, until the end of this burst.
	PeakRSSMiB float64 `json:"controller_peak_rss_mib"`
}

// Sustained: new ScaleRequests for distinct idle Deployments created at a steady rate while
// earlier ones become ready. ReadyWrittenMs runs, for each request the controller saw ready
// while requests were still arriving, from the controller's own stamp of that moment
// (status.readyTime, the controller's clock) to this process's watch receiving the status
// write that says Ready (this machine's clock, the same one; the watch's delivery adds
// milliseconds). The write's managedFields time would need no watch, but is kept to the
// second, too coarse for a bound of about one second.
type Sustained struct {
	RatePerS       float64     `json:"rate_per_s"`
	DurationS      float64     `json:"duration_s"`
	N              int         `json:"n"`
	SeenDuring     int         `json:"seen_during"`
	ReadyWrittenMs Percentiles `json:"ready_written_ms"`
}

// Herd: Wake calls from many goroutines for one target through the wake client.
type Herd struct {
	WakeCalls    int            `json:"wake_calls"`
	Goroutines   int            `json:"goroutines"`
	CRWrites     int            `json:"cr_writes"`
	ScaleWrites  int            `json:"scale_writes"`
	StatusWrites int            `json:"status_writes"`
	Actions      map[string]int `json:"actions"`
	// CallsMs is how long the calls took, all goroutines together; ReadyMs is from the first
	// call to WaitReady returning.
	CallsMs float64 `json:"calls_ms"`
	ReadyMs float64 `json:"ready_ms"`
	// ControllerRequests are the controller's API requests during the herd, by "VERB resource".
	ControllerRequests map[string]float64 `json:"controller_requests"`
}

// Footprint: the controller's memory with 0 and N ScaleRequests, then with N unrelated
// Deployments added, and its API writes while idle.
type Footprint struct {
	ScaleRequests          int                   `json:"scalerequests"`
	Deployments            int                   `json:"deployments"`
	RSSMiB0                float64               `json:"rss_mib_0"`
	HeapMiB0               float64               `json:"heap_mib_0"`
	RSSMiB10k              float64               `json:"rss_mib_10k"`
	HeapMiB10k             float64               `json:"heap_mib_10k"`
	RSSMiB10kDeploys       float64               `json:"rss_mib_10k_deploys"`
	HeapMiB10kDeploys      float64               `json:"heap_mib_10k_deploys"`
	RSSGrowthPct10kDeploys float64               `json:"rss_growth_pct_10k_deploys"`
	Readings               map[string]memReading `json:"readings"`
	IdleWritesPerMin       float64               `json:"idle_writes_per_min"`
	// IdleWritesPerMinExclLease leaves out the leader election's lease renewals.
	IdleWritesPerMinExclLease float64            `json:"idle_writes_per_min_excl_lease"`
	IdleWindowS               float64            `json:"idle_window_s"`
	IdleRequests              map[string]float64 `json:"idle_requests"`
}

// Env says where and what ran.
type Env struct {
	Cores           int      `json:"cores"`
	CPU             string   `json:"cpu"`
	MemoryMiB       int      `json:"memory_mib"`
	Go              string   `json:"go"`
	Kubernetes      string   `json:"kubernetes"`
	ControllerFlags []string `json:"controller_flags"`
	GitCommit       string   `json:"git_commit"`
	GitDirty        bool     `json:"git_dirty"`
	Quick           bool     `json:"quick"`
	Date            string   `json:"date"`
	LoadAvgStart    string   `json:"loadavg_start"`
	LoadAvgEnd      string   `json:"loadavg_end"`
	DurationS       float64  `json:"duration_s"`
}

func collectEnv(root string, cfg config) Env {
	e := Env{Cores: runtime.NumCPU(), Go: runtime.Version(), Quick: cfg.quick,
		Date: time.Now().UTC().Format(time.RFC3339), LoadAvgStart: loadAvg()}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				e.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		if _, err := fmt.Sscanf(string(data), "MemTotal: %d kB", &kb); err == nil {
			e.MemoryMiB = kb / 1024
		}
	}
	if out, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output(); err == nil {
		e.GitCommit = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("git", "-C", root, "status", "--porcelain").Output(); err == nil {
		e.GitDirty = len(strings.TrimSpace(string(out))) > 0
	}
	return e
}

func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

type row struct {
	metric, value, target string
	met                   *bool
}

func check(ok bool) *bool { return &ok }

func ms(p Percentiles) string {
	return fmt.Sprintf("%.1f / %.1f / %.1f", p.P50, p.P90, p.P99)
}

func printTable(w io.Writer, r *Results) {
	var rows []row
	add := func(metric, value, target string, met *bool) {
		rows = append(rows, row{metric, value, target, met})
	}
	f, s, h, fp := r.Floor, r.Single, r.Herd, r.Footprint
	if f.N > 0 {
		add(fmt.Sprintf("floor.patch_scaled_ms p50/p90/p99 (one /scale PATCH sent → replicas seen, n=%d)", f.N), ms(f.PatchScaledMs), "", nil)
		add("floor.patch_ready_ms (→ Deployment seen ready)", ms(f.PatchReadyMs), "", nil)
		add("floor.create_ms (three-request floor)", ms(f.CreateMs), "", nil)
		add("floor.scale_ms", ms(f.ScaleMs), "", nil)
		add("floor.status_ms", ms(f.StatusMs), "", nil)
		add("floor.total_ms", ms(f.TotalMs), "", nil)
	} else {
		add("floor", "not run", "", nil)
	}
	if s.N > 0 {
		add(fmt.Sprintf("single.sent_scaled_ms p50/p90/p99 (create sent → replicas seen, n=%d)", s.N), ms(s.SentScaledMs), "", nil)
		add("single.scaled_ratio_p50 (to floor.patch_scaled_ms)", fmt.Sprintf("%.2f", s.ScaledRatioP50), "≤ 2.0", check(s.ScaledRatioP50 <= 2.0))
		add("single.sent_ready_ms (create sent → Ready seen)", ms(s.SentReadyMs), "", nil)
		add("single.ready_ratio_p50 (to floor.patch_ready_ms)", fmt.Sprintf("%.2f", s.ReadyRatioP50), "", nil)
		add("single.scaled_ms (create returned → replicas seen)", ms(s.ScaledMs), "p99 ≤ 40", check(s.ScaledMs.P99 <= 40))
		add("single.status_ms", ms(s.StatusMs), "p99 ≤ 60", check(s.StatusMs.P99 <= 60))
		add("single.ready_detect_ms", ms(s.ReadyDetectMs), "p99 ≤ 50", check(s.ReadyDetectMs.P99 <= 50))
	} else {
		add("single", "not run", "", nil)
	}
	if len(r.Bursts) == 0 {
		add("burst", "not run", "", nil)
	}
	for _, b := range r.Bursts {
		scaledTarget, readyTarget, rssTarget := burstTargets(b.Deployments)
		add(fmt.Sprintf("burst %d: floor scaled / ready s (one PATCH each)", b.Deployments),
			fmt.Sprintf("%.2f / %.2f", b.FloorAllScaledS, b.FloorAllReadyS), "", nil)
		add(fmt.Sprintf("burst %d: all scaled s (ratio)", b.Deployments), fmt.Sprintf("%.2f (%.2f×)", b.AllScaledS, b.ScaledRatio),
			targetText(scaledTarget), checkIf(scaledTarget, b.ScaledRatio <= scaledTarget))
		add(fmt.Sprintf("burst %d: all Ready s (ratio)", b.Deployments), fmt.Sprintf("%.2f (%.2f×)", b.AllReadyS, b.ReadyRatio),
			targetText(readyTarget), checkIf(readyTarget, b.ReadyRatio <= readyTarget))
		add(fmt.Sprintf("burst %d: each wake sent → scaled ms (floor)", b.Deployments),
			fmt.Sprintf("%s (%s)", ms(b.WakeScaledMs), ms(b.FloorWakeScaledMs)), "", nil)
		add(fmt.Sprintf("burst %d: Ready / creates s / Deployments ready s", b.Deployments),
			fmt.Sprintf("%d / %.2f / %.2f", b.Ready, b.CreateS, b.DeploymentsReadyS), fmt.Sprint(b.Deployments), check(b.Ready == b.Deployments))
		add(fmt.Sprintf("burst %d: controller requests per wake", b.Deployments), perWake(b.RequestsPerWake), "", nil)
		add(fmt.Sprintf("burst %d: CPU s apiserver / controller / all (floor)", b.Deployments),
			fmt.Sprintf("%.1f / %.1f / %.1f (%.1f / - / %.1f)", b.CPUS["kube-apiserver"], b.CPUS["controller"], b.CPUS["total"],
				b.FloorCPUS["kube-apiserver"], b.FloorCPUS["total"]), "", nil)
		add(fmt.Sprintf("burst %d: controller peak RSS MiB", b.Deployments), fmt.Sprintf("%.1f", b.PeakRSSMiB),
			targetText(rssTarget), checkIf(rssTarget, b.PeakRSSMiB <= rssTarget))
	}
	if su := r.Sustained; su != nil {
		add(fmt.Sprintf("sustained: readiness seen -> Ready written under sustained arrivals, ms p50/p90/p99 (%.0f/s for %.0f s; n=%d seen ready while arriving)",
			su.RatePerS, su.DurationS, su.SeenDuring), ms(su.ReadyWrittenMs), "p99 ≤ 1000 + queue", nil)
	} else {
		add("sustained", "not run", "", nil)
	}
	if h.WakeCalls > 0 {
		add(fmt.Sprintf("herd.wake_calls (%d goroutines)", h.Goroutines), fmt.Sprint(h.WakeCalls), "", nil)
		add("herd.cr_writes", fmt.Sprint(h.CRWrites), "≤ 1", check(h.CRWrites <= 1))
		add("herd.scale_writes", fmt.Sprint(h.ScaleWrites), "1", check(h.ScaleWrites == 1))
		add("herd.status_writes", fmt.Sprint(h.StatusWrites), "≤ 3", check(h.StatusWrites <= 3))
	} else {
		add("herd", "not run", "", nil)
	}
	if fp.ScaleRequests > 0 {
		add("footprint.rss_mib_0 / heap_mib_0", fmt.Sprintf("%.1f / %.1f", fp.RSSMiB0, fp.HeapMiB0), "", nil)
		add(fmt.Sprintf("footprint.rss_mib_10k / heap (%d SRs)", fp.ScaleRequests), fmt.Sprintf("%.1f / %.1f", fp.RSSMiB10k, fp.HeapMiB10k), "rss ≤ 60", check(fp.RSSMiB10k <= 60))
		add(fmt.Sprintf("footprint.rss/heap +%d Deployments", fp.Deployments), fmt.Sprintf("%.1f / %.1f", fp.RSSMiB10kDeploys, fp.HeapMiB10kDeploys), "", nil)
		add("footprint.rss_growth_pct_10k_deploys", fmt.Sprintf("%.1f", fp.RSSGrowthPct10kDeploys), "≤ 10", check(fp.RSSGrowthPct10kDeploys <= 10))
		add("footprint.idle_writes_per_min (all)", fmt.Sprintf("%.1f", fp.IdleWritesPerMin), "0", check(fp.IdleWritesPerMin == 0))
		add("  of which not leader-election lease renewals", fmt.Sprintf("%.1f", fp.IdleWritesPerMinExclLease), "0", check(fp.IdleWritesPerMinExclLease == 0))
	} else {
		add("footprint", "not run", "", nil)
	}

	gateRows(r, add)
	endpointsRows(r, add)
	sleepRows(r, add)
	coldStartRows(r, add)

	others := func(cpu map[string]float64) string {
		if cpu == nil {
			return "-"
		}
		return fmt.Sprintf("%.0f%%", math.Max(0, 100*(cpu["machine"]-cpu["total"])/math.Max(cpu["machine"], 1e-9)))
	}
	burstCPU := []string{}
	for _, b := range r.Bursts {
		burstCPU = append(burstCPU, others(b.CPUS))
	}
	add("CPU taken by other processes: floor / single / bursts", fmt.Sprintf("%s / %s / %s", others(f.CPUS), others(s.CPUS), strings.Join(burstCPU, ", ")), "", nil)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "metric\tvalue\ttarget\tmet?")
	for _, r := range rows {
		met := ""
		if r.met != nil {
			met = map[bool]string{true: "yes", false: "NO"}[*r.met]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.metric, r.value, r.target, met)
	}
	tw.Flush()
	e := r.Env
	fmt.Fprintf(w, "\n%d cores (%s), %d MiB, %s, Kubernetes %s, commit %s%s, load average %s → %s, %.0fs%s\n",
		e.Cores, e.CPU, e.MemoryMiB, e.Go, e.Kubernetes, short(e.GitCommit), map[bool]string{true: " (dirty)"}[e.GitDirty],
		e.LoadAvgStart, e.LoadAvgEnd, e.DurationS, map[bool]string{true: ", quick"}[e.Quick])
}

// burstTargets are the targets for a burst of n: ratios to the one-PATCH floor (0 where
// none is set) and the controller's peak RSS.
func burstTargets(n int) (scaled, ready, rssMiB float64) {
	switch n {
	case 100:
		return 2.5, 0, 0
	case 1000:
		return 2.0, 1.10, 0
	case 10000:
		return 1.5, 1.2, 256
	}
	return 0, 0, 0
}

func targetText(limit float64) string {
	if limit == 0 {
		return ""
	}
	return fmt.Sprintf("≤ %g", limit)
}

func checkIf(limit float64, ok bool) *bool {
	if limit == 0 {
		return nil
	}
	return check(ok)
}

// perWake prints requests per wake as "VERB resource n" pairs, most frequent first.
func perWake(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %.2f", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

func ratio(a, b float64) float64 {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return 0
	}
	return math.Round(a/b*100) / 100
}
