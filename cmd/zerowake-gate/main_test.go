package main

import (
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"--window=2s", "--timeout=10s", "--page", "--max-held-per-target=-1"})
	if err != nil {
		t.Fatal(err)
	}
	if o.window != 2*time.Second || o.gate.Timeout != 10*time.Second || !o.gate.Page || o.gate.MaxHeldPerTarget != -1 {
		t.Errorf("parsed %+v", o)
	}
	for _, bad := range [][]string{{"--window=0s"}, {"--timeout=-1s"}, {"--max-held-per-target=0"}, {"--kube-api-qps=0"}, {"extra"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
