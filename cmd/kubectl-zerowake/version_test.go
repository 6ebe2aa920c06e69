package main

import (
	"strings"
	"testing"

	"github.com/zerowake/zerowake/generated/clientset/versioned/fake"
)

func TestRunVersion(t *testing.T) {
	for _, arg := range []string{"--version", "version"} {
		code, stdout, stderr := runCLI(fake.NewSimpleClientset(), arg)
		if code != exitReady || !strings.HasPrefix(stdout, "kubectl-zerowake ") || stderr != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", arg, code, stdout, stderr)
		}
	}
}
