package wakeclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zerowake/zerowake/hack/localcluster"
)

// runCLI runs kubectl-zerowake as a person would, through kubectl's plugin mechanism, and
// returns its exit code and output.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cluster.KubectlPath(), append([]string{"zerowake"}, args...)...)
	// kubectl finds plugins on PATH by their kubectl- prefix; flags before the plugin name are
	// refused, so the kubeconfig comes from the environment.
	cmd.Env = append(os.Environ(), "KUBECONFIG="+cluster.Kubeconfig(),
		"PATH="+filepath.Dir(cli)+string(os.PathListSeparator)+os.Getenv("PATH"))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("running the plugin: %v", err)
	}
	return code, out.String(), errOut.String()
}

type cliResult struct {
	Result      string `json:"result"`
	Phase       string `json:"phase"`
	Reason      string `json:"reason"`
	ColdStartMs *int64 `json:"coldStartMs"`
	ExitCode    int    `json:"exitCode"`
}

func TestCLIWakesAndWaits(t *testing.T) {
	ns := localcluster.NewNamespace(t, cluster)
	createIdleDeployment(t, ns, "api")
	code, stdout, stderr := runCLI(t, "wake", "deployment/api", "-n", ns, "--min", "2", "--wait", "--timeout", "45s", "--output", "json")
	if code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	var r cliResult
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("--output json is not one JSON object: %v\n%s", err, stdout)
	}
	if r.Result != "ready" || r.Phase != "Ready" || r.ColdStartMs == nil || r.ExitCode != 0 {
		t.Fatalf("result: %+v", r)
	}
	d, err := kube.AppsV1().Deployments(ns).Get(context.Background(), "api", metav1.GetOptions{})
	if err != nil || *d.Spec.Replicas != 2 {
		t.Fatalf("deployment not at 2 replicas: %v", err)
	}

	// Text output for people: progress and the cold-start time.
	code, stdout, stderr = runCLI(t, "wake", "deploy/api", "-n", ns, "--wait")
	if code != 0 || !strings.Contains(stdout+stderr, "ready") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
}

func TestCLIExitCodes(t *testing.T) {
	ns := localcluster.NewNamespace(t, cluster)

	code, stdout, stderr := runCLI(t, "wake", "deployment/missing", "-n", ns, "--wait", "--timeout", "45s")
	if code != 1 || !strings.Contains(stdout+stderr, "TargetNotFound") {
		t.Errorf("missing target: exit %d, want 1 with the reason\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}

	// A ScaleRequest whose target exists but can never become ready before the timeout.
	createIdleDeployment(t, ns, "stuck")
	patch := []byte(`{"spec":{"template":{"spec":{"nodeSelector":{"zerowake.dev/no-such-node":"true"}}}}}`)
	if _, err := kube.AppsV1().Deployments(ns).Patch(context.Background(), "stuck", "application/strategic-merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runCLI(t, "wake", "deployment/stuck", "-n", ns, "--wait", "--timeout", "2s", "--output", "json")
	var r cliResult
	if code != 2 || json.Unmarshal([]byte(stdout), &r) != nil || r.Result != "timeout" {
		t.Errorf("timeout: exit %d, want 2 with result timeout\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}

	for _, args := range [][]string{
		{"wake"},
		{"wake", "gizmo/web", "-n", ns},
		{"wake", "deployment/web", "--min", "0", "-n", ns},
		{"wake", "deployment/web", "--output", "yaml", "-n", ns},
	} {
		code, stdout, stderr := runCLI(t, args...)
		if code != 64 || stderr == "" {
			t.Errorf("%q: exit %d, want 64 with a message\nstdout: %s\nstderr: %s", args, code, stdout, stderr)
		}
	}
}
