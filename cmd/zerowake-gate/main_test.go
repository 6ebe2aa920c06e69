package main

import (
	"slices"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"--namespaces=shop", "--window=2s", "--timeout=10s", "--page", "--max-held-per-target=-1"})
	if err != nil {
		t.Fatal(err)
	}
	if o.window != 2*time.Second || o.gate.Timeout != 10*time.Second || !o.gate.Page || o.gate.MaxHeldPerTarget != -1 {
		t.Errorf("parsed %+v", o)
	}
	if o.defaultMax != 1 || o.gate.ExposeDetails || o.gate.MethodHeader != "X-Forwarded-Method" {
		t.Errorf("defaults: max %d, expose %v, method header %q", o.defaultMax, o.gate.ExposeDetails, o.gate.MethodHeader)
	}
	for _, bad := range [][]string{{"--window=0s"}, {"--timeout=-1s"}, {"--max-held-per-target=0"}, {"--kube-api-qps=0"}, {"extra"},
		{"--default-max-replicas=0"}} {
		if _, err := parseFlags(append([]string{"--namespaces=shop"}, bad...)); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// The gate serves only the namespaces it is told to; every namespace only when asked so.
func TestParseFlagsNamespaces(t *testing.T) {
	o, err := parseFlags([]string{"--namespaces=shop, blog,shop", "--namespace=legacy"})
	if err != nil || !slices.Equal(o.namespaces, []string{"shop", "blog", "legacy"}) || o.allNamespaces {
		t.Errorf("namespaces %v (all %v), %v", o.namespaces, o.allNamespaces, err)
	}
	if o, err := parseFlags([]string{"--all-namespaces"}); err != nil || !o.allNamespaces || o.namespaces != nil {
		t.Errorf("--all-namespaces: %+v, %v", o, err)
	}
	for _, bad := range [][]string{{}, {"--namespaces="}, {"--all-namespaces", "--namespaces=shop"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%v accepted: a gate must be told which namespaces it serves", bad)
		}
	}
}

// --version needs no namespaces: it only prints.
func TestParseFlagsVersion(t *testing.T) {
	o, err := parseFlags([]string{"--version"})
	if err != nil || !o.printVersion {
		t.Errorf("--version: %+v, %v", o, err)
	}
	if o, err := parseFlags([]string{"--namespaces=shop"}); err != nil || o.printVersion {
		t.Errorf("without --version: %+v, %v", o, err)
	}
}

// A replaced gate keeps serving for --shutdown-delay, then drains held calls for --shutdown-grace.
func TestParseFlagsShutdown(t *testing.T) {
	o, err := parseFlags([]string{"--namespaces=shop"})
	if err != nil || o.shutdown.Delay != 5*time.Second || o.shutdown.Grace != 20*time.Second {
		t.Errorf("defaults: delay %s, grace %s, %v; want 5s and 20s", o.shutdown.Delay, o.shutdown.Grace, err)
	}
	if o, err := parseFlags([]string{"--namespaces=shop", "--shutdown-delay=0s", "--shutdown-grace=1m"}); err != nil ||
		o.shutdown.Delay != 0 || o.shutdown.Grace != time.Minute {
		t.Errorf("--shutdown-delay=0s --shutdown-grace=1m: %+v, %v", o.shutdown, err)
	}
	for _, bad := range []string{"--shutdown-delay=-1s", "--shutdown-grace=-1s"} {
		if _, err := parseFlags([]string{"--namespaces=shop", bad}); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}
