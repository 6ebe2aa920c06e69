package activity

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	// LabelActivity marks a workload's activity Lease (value "true").
	LabelActivity = "zerowake.dev/activity"
	// LabelGateMember marks a gate replica's membership Lease (value "true").
	LabelGateMember = "zerowake.dev/gate-member"
	// AnnotationDrainsSeen on a membership Lease lists the drains the gate has seen, as
	// space-separated DrainMarks.
	AnnotationDrainsSeen = "zerowake.dev/drains-seen"
	// AnnotationTarget on an activity Lease names its workload as Kind/name, for people.
	AnnotationTarget = "zerowake.dev/target"
)

// MinInterval is the shortest renewal interval: below it a renewal would be a write per call.
const MinInterval = time.Second

// Interval is how often activity is recorded for a workload that sleeps after idleAfter: a
// fifth of it (one write a minute at idle-after 5m), so a renewal lags the activity it records by
// at most a fifth of idle-after.
func Interval(idleAfter time.Duration) time.Duration {
	return max(idleAfter/5, MinInterval)
}

// MaxLag is the most a renewal may lag the activity it records, for a workload that sleeps after
// idleAfter: a Recorder renews once its copy is an interval old plus its own offset of up to a
// fifth of an interval (so that several gates do not all renew at the same moment).
func MaxLag(idleAfter time.Duration) time.Duration {
	i := Interval(idleAfter)
	return i + i/5
}

// IdleSince reports whether a workload whose activity the controller last saw change at
// lastChange is idle at now: no change for idle-after plus the renewal lag, so that it has
// truly been unused for at least idle-after.
func IdleSince(lastChange, now time.Time, idleAfter time.Duration) (idle bool, remaining time.Duration) {
	at := lastChange.Add(idleAfter + MaxLag(idleAfter))
	if !now.Before(at) {
		return true, 0
	}
	return false, at.Sub(now)
}

// LeaseName names the activity Lease of a workload of kind named name: "zerowake-" + the kind in
// lower case + "-" + name, or a hash of them when that would be too long for a name.
func LeaseName(kind, name string) string {
	n := "zerowake-" + strings.ToLower(kind) + "-" + name
	if len(n) <= 253 {
		return n
	}
	sum := sha256.Sum256([]byte(kind + "/" + name))
	return "zerowake-" + hex.EncodeToString(sum[:16])
}

// FenceAfter is how long after the start of its last successful membership renewal a gate
// stops letting requests through, for a membership Lease of duration d. The controller takes the
// gate for gone only d after it observed that renewal, which came after its start: the gate has
// fenced itself by then, with a margin for the two clocks' rates.
func FenceAfter(d time.Duration) time.Duration { return d * 4 / 5 }

// DrainMark names one drain of one ScaleRequest: "namespace/name=since", where since is the
// request's status.drainingSince in Unix microseconds. A mark matches only that drain: one
// cancelled and decided again has another.
func DrainMark(namespace, name string, since time.Time) string {
	return namespace + "/" + name + "=" + strconv.FormatInt(since.UnixMicro(), 10)
}

// FormatMarks joins marks, sorted, into an annotation value.
func FormatMarks(marks []string) string {
	sorted := append([]string(nil), marks...)
	sort.Strings(sorted)
	return strings.Join(sorted, " ")
}

// HasMark reports whether an annotation value lists mark.
func HasMark(value, mark string) bool {
	for value != "" {
		var field string
		field, value, _ = strings.Cut(value, " ")
		if field == mark {
			return true
		}
	}
	return false
}
