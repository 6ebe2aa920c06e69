package e2e

import (
	"strings"
	"testing"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
)

// TestKubectl uses the ScaleRequest the way a person does: wait for it, list it, explain it.
func TestKubectl(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	createDeployment(t, ns, "web", 0)
	createScaleRequest(t, newScaleRequest(ns, "web", "apps/v1", "Deployment", 1))
	ctx := testContext(t)

	if _, err := cluster.Kubectl(ctx, "wait", "-n", ns, "--for=condition=Ready", "sr/web", "--timeout=45s"); err != nil {
		t.Fatalf("kubectl wait: %v", err)
	}

	out, err := cluster.Kubectl(ctx, "get", "scalerequests", "-n", ns)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("want a header and one row:\n%s", out)
	}
	if header := strings.Fields(lines[0]); strings.Join(header, " ") != "NAME KIND TARGET MIN REPLICAS READY PHASE COLD-START AGE" {
		t.Fatalf("columns: %q", header)
	}
	row := strings.Fields(lines[1])
	if len(row) != 9 || row[0] != "web" || row[1] != "Deployment" || row[2] != "web" || row[3] != "1" ||
		row[4] != "1" || row[5] != "1" || row[6] != string(v1alpha1.PhaseReady) || !strings.HasSuffix(row[7], "s") {
		t.Fatalf("row: %q", row)
	}

	// The short name and the category work too.
	for _, args := range [][]string{{"get", "sr", "-n", ns, "-o", "name"}, {"get", "zerowake", "-n", ns, "-o", "name"}} {
		out, err := cluster.Kubectl(ctx, args...)
		if err != nil || strings.TrimSpace(out) != "scalerequest.zerowake.dev/web" {
			t.Errorf("kubectl %s: %q %v", strings.Join(args, " "), out, err)
		}
	}

	out, err = cluster.Kubectl(ctx, "get", "sr", "-n", ns, "-o", "wide")
	if err != nil || !strings.Contains(out, "REASON") || !strings.Contains(out, v1alpha1.ReasonTargetReady) {
		t.Errorf("wide output lacks the Ready reason: %v\n%s", err, out)
	}

	out, err = cluster.Kubectl(ctx, "explain", "scalerequest.spec.minReplicas")
	if err != nil || !strings.Contains(out, "never lowers replicas") {
		t.Errorf("kubectl explain: %v\n%s", err, out)
	}
	out, err = cluster.Kubectl(ctx, "explain", "scalerequest.status.coldStartDuration")
	if err != nil || !strings.Contains(out, "time from the latest signal") {
		t.Errorf("kubectl explain: %v\n%s", err, out)
	}
}
