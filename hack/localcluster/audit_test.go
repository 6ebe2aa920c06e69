package localcluster

import (
	"slices"
	"strings"
	"testing"
)

// TestAuditIsOptIn: the apiserver audits only when given a policy, and then writes JSON lines,
// unrotated, to logs/audit.log, blocking on each event so the log is complete up to any answer.
func TestAuditIsOptIn(t *testing.T) {
	c := &Cluster{dir: "/cluster"}
	if c.AuditLog() != "" || slices.ContainsFunc(c.apiserverArgs(ports{}), func(a string) bool { return strings.HasPrefix(a, "--audit") }) {
		t.Fatalf("auditing without a policy: %v", c.apiserverArgs(ports{}))
	}
	c.auditPolicy = []byte("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Metadata}]\n")
	args := c.apiserverArgs(ports{})
	for _, want := range []string{
		"--audit-policy-file=/cluster/config/audit-policy.yaml",
		"--audit-log-path=/cluster/logs/audit.log",
		"--audit-log-format=json",
		"--audit-log-mode=blocking",
		"--audit-log-maxsize=0",
	} {
		if !slices.Contains(args, want) {
			t.Errorf("apiserver arguments lack %s: %v", want, args)
		}
	}
	if c.AuditLog() != "/cluster/logs/audit.log" {
		t.Errorf("AuditLog() = %q", c.AuditLog())
	}
}
