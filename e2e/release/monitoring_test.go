package release

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
)

// targetLabels are the labels Prometheus (with the Prometheus Operator's PodMonitor) attaches to
// every scraped series; queries may use them although /metrics does not carry them.
var targetLabels = map[string]bool{"job": true, "instance": true, "namespace": true, "pod": true, "container": true, "endpoint": true, "service": true}

// The variables Grafana substitutes before a query reaches Prometheus.
var grafanaVariables = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")

// promqlResult is what hack/tools/promql reports for one expression.
type promqlResult struct {
	Expr      string `json:"expr"`
	Error     string `json:"error"`
	Selectors []struct {
		Metric string            `json:"metric"`
		Labels []string          `json:"labels"`
		Equal  map[string]string `json:"equal"`
	} `json:"selectors"`
	Labels []string `json:"labels"`
}

// checkMonitoring parses every query of deploy/monitoring with Prometheus's parser (through
// hack/tools/promql) and checks every metric, label and equality-matched label value it names
// against a scrape of the running controller. It also checks that the PodMonitor selects the
// controller's pods on a port they expose.
func checkMonitoring(t *testing.T, scrape string, deployment *appsv1.Deployment) {
	series := parseExposition(t, scrape)
	dir := filepath.Join(root, "deploy", "monitoring")

	var exprs, sources []string
	for _, doc := range decodeYAMLFile(t, filepath.Join(dir, "prometheusrule.yaml")) {
		spec, _ := doc["spec"].(map[string]any)
		groups, _ := spec["groups"].([]any)
		for _, g := range groups {
			rules, _ := g.(map[string]any)["rules"].([]any)
			for _, r := range rules {
				rule := r.(map[string]any)
				exprs = append(exprs, fmt.Sprint(rule["expr"]))
				sources = append(sources, fmt.Sprintf("prometheusrule.yaml alert %v", rule["alert"]))
			}
		}
	}
	var dashboard any
	data, err := os.ReadFile(filepath.Join(dir, "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &dashboard); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	walkJSON(dashboard, "dashboard.json", func(path string, expr string) {
		exprs = append(exprs, grafanaVariables.Replace(expr))
		sources = append(sources, path)
	})
	if len(exprs) < 10 {
		t.Fatalf("found only %d queries in deploy/monitoring", len(exprs))
	}

	input, _ := json.Marshal(exprs)
	stdout, err := runWithInput(filepath.Join(root, "hack", "tools", "promql"), input, "go", "run", ".")
	if err != nil {
		t.Fatal(err)
	}
	var results []promqlResult
	if err := json.Unmarshal(stdout, &results); err != nil || len(results) != len(exprs) {
		t.Fatalf("hack/tools/promql answered %d results for %d queries: %v", len(results), len(exprs), err)
	}
	for i, r := range results {
		where := sources[i]
		if r.Error != "" {
			t.Errorf("%s: %s does not parse: %s", where, r.Expr, r.Error)
			continue
		}
		if strings.Contains(r.Expr, "$") {
			t.Errorf("%s: unsubstituted variable in %s", where, r.Expr)
		}
		selected := map[string]bool{}
		for _, s := range r.Selectors {
			labels, ok := series[s.Metric]
			if !ok {
				t.Errorf("%s: metric %s is not in the controller's /metrics", where, s.Metric)
				continue
			}
			for l := range labels {
				selected[l] = true
			}
			for _, l := range s.Labels {
				if labels[l] == nil && !targetLabels[l] {
					t.Errorf("%s: %s has no label %s", where, s.Metric, l)
				}
			}
			for l, v := range s.Equal {
				if labels[l] != nil && !labels[l][v] {
					t.Errorf("%s: %s{%s=%q} matches nothing in /metrics (values: %v)", where, s.Metric, l, v, keys(labels[l]))
				}
			}
		}
		for _, l := range r.Labels {
			if !selected[l] && !targetLabels[l] {
				t.Errorf("%s: label %s is grouped or matched on, but none of the selected metrics has it", where, l)
			}
		}
	}

	checked := 0
	for _, r := range results {
		checked += len(r.Selectors)
	}
	t.Logf("%d queries, %d selectors checked against %d series names in /metrics", len(results), checked, len(series))

	for _, doc := range decodeYAMLFile(t, filepath.Join(dir, "podmonitor.yaml")) {
		spec := doc["spec"].(map[string]any)
		match := spec["selector"].(map[string]any)["matchLabels"].(map[string]any)
		for k, v := range match {
			if deployment.Spec.Template.Labels[k] != v {
				t.Errorf("PodMonitor selects %s=%v, the controller's pods have %q", k, v, deployment.Spec.Template.Labels[k])
			}
		}
		for _, e := range spec["podMetricsEndpoints"].([]any) {
			port := e.(map[string]any)["port"]
			found := false
			for _, p := range deployment.Spec.Template.Spec.Containers[0].Ports {
				found = found || p.Name == port
			}
			if !found {
				t.Errorf("PodMonitor scrapes port %v, which the controller's container does not name", port)
			}
		}
	}
}

// parseExposition reads Prometheus text format into series name → label → values.
func parseExposition(t *testing.T, text string) map[string]map[string]map[string]bool {
	t.Helper()
	series := map[string]map[string]map[string]bool{}
	scanner := bufio.NewScanner(strings.NewReader(text))
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	for scanner.Scan() {
		line := scanner.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		if end < 0 {
			t.Fatalf("bad exposition line %q", line)
		}
		name := line[:end]
		if series[name] == nil {
			series[name] = map[string]map[string]bool{}
		}
		if line[end] != '{' {
			continue
		}
		rest := line[end+1:]
		for {
			rest = strings.TrimLeft(rest, ", ")
			if strings.HasPrefix(rest, "}") {
				break
			}
			label, after, ok := strings.Cut(rest, `="`)
			if !ok {
				t.Fatalf("bad labels in %q", line)
			}
			var value strings.Builder
			i := 0
			for ; i < len(after) && after[i] != '"'; i++ {
				if after[i] == '\\' && i+1 < len(after) {
					i++
				}
				value.WriteByte(after[i])
			}
			if series[name][label] == nil {
				series[name][label] = map[string]bool{}
			}
			series[name][label][value.String()] = true
			rest = after[min(i+1, len(after)):]
		}
	}
	if len(series) == 0 {
		t.Fatal("empty /metrics")
	}
	return series
}

// walkJSON calls found for every string under an "expr" key.
func walkJSON(v any, path string, found func(path, expr string)) {
	switch x := v.(type) {
	case map[string]any:
		for k, child := range x {
			if s, ok := child.(string); ok && k == "expr" {
				found(path+"."+k, s)
				continue
			}
			walkJSON(child, path+"."+k, found)
		}
	case []any:
		for i, child := range x {
			walkJSON(child, fmt.Sprintf("%s[%d]", path, i), found)
		}
	}
}

func decodeYAMLFile(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var docs []map[string]any
	dec := yaml.NewYAMLOrJSONDecoder(f, 4096)
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); err == io.EOF {
			return docs
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

func runWithInput(dir string, input []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(input)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s in %s: %v\n%s", name, strings.Join(args, " "), dir, err, stderr.String())
	}
	return out, nil
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
