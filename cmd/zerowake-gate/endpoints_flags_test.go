package main

import (
	"testing"

	"github.com/zerowake/zerowake/gate"
)

// The Services the gate follows are bounded by default, and the bounds cannot be switched off.
func TestParseFlagsWatchedServices(t *testing.T) {
	o, err := parseFlags([]string{"--namespaces=shop"})
	if err != nil {
		t.Fatal(err)
	}
	if o.endpoints.MaxServices != gate.DefaultMaxWatchedServices || o.endpoints.Idle != gate.DefaultServiceIdle {
		t.Errorf("defaults: %d Services, idle %s", o.endpoints.MaxServices, o.endpoints.Idle)
	}
	for _, bad := range []string{"--max-watched-services=0", "--max-watched-services=-1", "--service-idle=0s"} {
		if _, err := parseFlags([]string{"--namespaces=shop", bad}); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}
