package main

import (
	"math"
	"sort"
	"time"
)

// Percentiles is the JSON form of a latency distribution, in milliseconds.
type Percentiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
}

// samples is a list of durations.
type samples []time.Duration

func (s samples) ms() []float64 {
	out := make([]float64, len(s))
	for i, d := range s {
		out[i] = float64(d) / float64(time.Millisecond)
	}
	sort.Float64s(out)
	return out
}

// percentiles uses the nearest-rank method on the sorted samples.
func (s samples) percentiles() Percentiles {
	ms := s.ms()
	return Percentiles{P50: rank(ms, 0.50), P90: rank(ms, 0.90), P99: rank(ms, 0.99)}
}

func rank(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	i = min(max(i, 0), len(sorted)-1)
	return round2(sorted[i])
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }
