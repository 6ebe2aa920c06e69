package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	o, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.rescaleDuration != 30*time.Second || o.workers < 1 || !o.leaderElect || o.opsAddress != "" || o.qps <= 5 || o.defaultMaxRepl != 1 {
		t.Fatalf("defaults: %+v", o)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--workers=0"}, "--workers must be at least 1"},
		{[]string{"--rescale-duration=0s"}, "--rescale-duration must be positive"},
		{[]string{"--ready-timeout=-1s"}, "--ready-timeout must be positive"},
		{[]string{"--kube-api-qps=0"}, "must be positive"},
		{[]string{"--kube-api-scale-burst=0"}, "must be positive"},
		{[]string{"--leader-election-lease-duration=5s", "--leader-election-renew-deadline=10s"}, "lease duration > renew deadline"},
		{[]string{"--default-max-replicas=0"}, "--default-max-replicas must be between 1 and 1000"},
		{[]string{"extra"}, "unexpected arguments: extra"},
		{[]string{"--no-such-flag"}, "flag provided but not defined"},
	} {
		if _, err := parseFlags(tc.args); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseFlags(%q) = %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
