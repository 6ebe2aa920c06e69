// Command promql parses PromQL expressions with Prometheus's own parser and reports, for each,
// the metrics it selects and the labels it names, so that a test can check them against what
// the controller really exports.
//
// It reads a JSON array of expressions on stdin and writes a JSON array of results on stdout,
// in the same order. An expression that does not parse gets its error and no references.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// Result is what one expression refers to.
type Result struct {
	Expr  string `json:"expr"`
	Error string `json:"error,omitempty"`
	// Selectors are the series selectors, each with the labels its matchers name.
	Selectors []Selector `json:"selectors,omitempty"`
	// Labels are the labels named outside selectors: by/without grouping, on/ignoring and
	// group_left/group_right matching.
	Labels []string `json:"labels,omitempty"`
}

// Selector is one vector selector: a metric name and the labels its matchers use.
type Selector struct {
	Metric string   `json:"metric"`
	Labels []string `json:"labels,omitempty"`
	// Equal holds the values of the selector's equality matchers, which must exist for the
	// selector to match anything.
	Equal map[string]string `json:"equal,omitempty"`
}

func main() {
	var exprs []string
	if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
		fmt.Fprintln(os.Stderr, "promql: reading a JSON array of expressions from stdin:", err)
		os.Exit(2)
	}
	results := make([]Result, 0, len(exprs))
	for _, e := range exprs {
		results = append(results, inspect(e))
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(results); err != nil {
		fmt.Fprintln(os.Stderr, "promql:", err)
		os.Exit(1)
	}
}

func inspect(expr string) Result {
	r := Result{Expr: expr}
	ast, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	outside := map[string]bool{}
	parser.Inspect(ast, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			s := Selector{Metric: n.Name}
			for _, m := range n.LabelMatchers {
				if m.Name == labels.MetricName {
					if s.Metric == "" {
						s.Metric = m.Value
					}
					continue
				}
				s.Labels = append(s.Labels, m.Name)
				if m.Type == labels.MatchEqual {
					if s.Equal == nil {
						s.Equal = map[string]string{}
					}
					s.Equal[m.Name] = m.Value
				}
			}
			sort.Strings(s.Labels)
			r.Selectors = append(r.Selectors, s)
		case *parser.AggregateExpr:
			for _, l := range n.Grouping {
				outside[l] = true
			}
		case *parser.BinaryExpr:
			if n.VectorMatching != nil {
				for _, l := range n.VectorMatching.MatchingLabels {
					outside[l] = true
				}
				for _, l := range n.VectorMatching.Include {
					outside[l] = true
				}
			}
		}
		return nil
	})
	for l := range outside {
		r.Labels = append(r.Labels, l)
	}
	sort.Strings(r.Labels)
	return r
}
