package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// metricSample is one line of the Prometheus text format.
type metricSample struct {
	name   string
	labels map[string]string
	value  float64
}

// scrape reads every sample the controller's /metrics serves.
func scrape(ctx context.Context, ops string) ([]metricSample, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ops+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	var out []metricSample
	scanner := bufio.NewScanner(resp.Body)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	for scanner.Scan() {
		line := scanner.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		s, ok := parseSample(line)
		if ok {
			out = append(out, s)
		}
	}
	return out, scanner.Err()
}

func parseSample(line string) (metricSample, bool) {
	s := metricSample{labels: map[string]string{}}
	rest := line
	if i := strings.IndexByte(line, '{'); i >= 0 {
		j := strings.LastIndexByte(line, '}')
		if j < i {
			return s, false
		}
		s.name = line[:i]
		for _, pair := range splitLabels(line[i+1 : j]) {
			k, v, ok := strings.Cut(pair, "=")
			if !ok {
				continue
			}
			uq, err := strconv.Unquote(v)
			if err != nil {
				uq = strings.Trim(v, `"`)
			}
			s.labels[k] = uq
		}
		rest = strings.TrimSpace(line[j+1:])
	} else {
		name, r, ok := strings.Cut(line, " ")
		if !ok {
			return s, false
		}
		s.name, rest = name, r
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return s, false
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return s, false
	}
	s.value = v
	return s, true
}

// splitLabels splits `a="x",b="y,z"` at commas outside quotes.
func splitLabels(s string) []string {
	var out []string
	inQuote, escaped, start := false, false, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case escaped:
			escaped = false
		case c == '\\':
			escaped = true
		case c == '"':
			inQuote = !inQuote
		case c == ',' && !inQuote:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// metricValue returns the sum of the samples named name whose labels match every given pair.
func metricValue(all []metricSample, name string, labels ...string) float64 {
	var total float64
	for _, s := range all {
		if s.name != name {
			continue
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			if s.labels[labels[i]] != labels[i+1] {
				match = false
				break
			}
		}
		if match {
			total += s.value
		}
	}
	return total
}

// apiRequests returns zerowake_api_requests_total by "VERB resource".
func apiRequests(all []metricSample) map[string]float64 {
	out := map[string]float64{}
	for _, s := range all {
		if s.name == "zerowake_api_requests_total" {
			out[s.labels["verb"]+" "+s.labels["resource"]] += s.value
		}
	}
	return out
}

// isWrite reports whether a verb from zerowake_api_requests_total changes state.
func isWrite(verb string) bool {
	switch verb {
	case "GET", "LIST", "WATCH", "HEAD", "OPTIONS":
		return false
	}
	return true
}

// requestDelta is after-before for each "VERB resource", without zero entries.
func requestDelta(before, after map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// writesIn sums the write requests of a delta, optionally only those whose resource matches.
func writesIn(delta map[string]float64, keep func(verb, resource string) bool) float64 {
	var total float64
	for k, v := range delta {
		verb, resource, _ := strings.Cut(k, " ")
		if isWrite(verb) && (keep == nil || keep(verb, resource)) {
			total += v
		}
	}
	return total
}
