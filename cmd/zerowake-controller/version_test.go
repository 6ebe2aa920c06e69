package main

import "testing"

func TestParseFlagsVersion(t *testing.T) {
	o, err := parseFlags([]string{"--version"})
	if err != nil || !o.printVersion {
		t.Fatalf("parseFlags(--version) = %+v, %v", o, err)
	}
}
