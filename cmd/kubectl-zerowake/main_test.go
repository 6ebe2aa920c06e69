package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	coordinationclient "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	k8stesting "k8s.io/client-go/testing"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/generated/clientset/versioned"
	"github.com/zerowake/zerowake/generated/clientset/versioned/fake"
	"github.com/zerowake/zerowake/wake"
)

func TestParseArgs(t *testing.T) {
	dep := func(ns, name string, min int32) wake.Target {
		t := wake.Deployment(ns, name)
		t.MinReplicas = min
		return t
	}
	tests := []struct {
		args []string
		want wake.Target
		wait bool
		out  string
	}{
		{args: []string{"wake", "deployment/web"}, want: dep("", "web", 1)},
		{args: []string{"wake", "deploy/web", "-n", "shop", "--min", "2", "--wait", "--timeout", "60s"}, want: dep("shop", "web", 2), wait: true},
		{args: []string{"-n", "shop", "wake", "--min=3", "deployments/web"}, want: dep("shop", "web", 3)},
		{args: []string{"wake", "deployments.apps", "web", "--namespace", "shop"}, want: dep("shop", "web", 1)},
		{args: []string{"wake", "Deployment/web"}, want: dep("", "web", 1)},
		{args: []string{"wake", "sts/db"}, want: wake.StatefulSet("", "db")},
		{args: []string{"wake", "statefulsets/db"}, want: wake.StatefulSet("", "db")},
		{args: []string{"wake", "StatefulSet/db"}, want: wake.StatefulSet("", "db")},
		{args: []string{"wake", "rollout/api", "-o", "json"}, want: wake.Rollout("", "api"), out: "json"},
		{args: []string{"wake", "ro/api", "--output", "json"}, want: wake.Rollout("", "api"), out: "json"},
		{args: []string{"wake", "rs/x"}, want: wake.Target{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "x"}},
		{args: []string{"wake", "deploy/web", "--api-version", "apps/v1beta2"},
			want: wake.Target{APIVersion: "apps/v1beta2", Kind: "Deployment", Name: "web"}},
		{args: []string{"wake", "CloneSet/web", "--api-version", "apps.kruise.io/v1alpha1"},
			want: wake.Target{APIVersion: "apps.kruise.io/v1alpha1", Kind: "CloneSet", Name: "web"}},
		{args: []string{"wake", "--", "deploy/web"}, want: dep("", "web", 1)},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			cfg, err := parseArgs(tc.args)
			if err != nil {
				t.Fatalf("parseArgs: %v", err)
			}
			want := tc.want
			if want.MinReplicas == 0 {
				want.MinReplicas = 1
			}
			if cfg.target != want {
				t.Errorf("target = %+v; want %+v", cfg.target, want)
			}
			if cfg.wait != tc.wait {
				t.Errorf("wait = %v", cfg.wait)
			}
			if out := map[bool]string{true: tc.out, false: "text"}[tc.out != ""]; cfg.output != out {
				t.Errorf("output = %q; want %q", cfg.output, out)
			}
		})
	}
}

func TestParseArgsErrors(t *testing.T) {
	tests := []struct {
		args    []string
		message string
	}{
		{nil, "missing command"},
		{[]string{"sleep", "deploy/web"}, "unknown command"},
		{[]string{"wake"}, "missing workload"},
		{[]string{"wake", "foo/web"}, `unknown kind "foo"`},
		{[]string{"wake", "deploymnet/web"}, `unknown kind "deploymnet"`},
		{[]string{"wake", "CloneSet/web"}, "needs --api-version"},
		{[]string{"wake", "deploy/web", "--api-version", "apps"}, "--api-version"},
		{[]string{"wake", "deploy/"}, "want KIND/NAME"},
		{[]string{"wake", "/web"}, "want KIND/NAME"},
		{[]string{"wake", "deploy/Web_1"}, "invalid name"},
		{[]string{"wake", "deploy/web", "extra"}, "want one workload"},
		{[]string{"wake", "deploy/web", "-n", "Shop!"}, "invalid namespace"},
		{[]string{"wake", "deploy/web", "--min", "0"}, "--min 0"},
		{[]string{"wake", "deploy/web", "--min", "1001"}, "--min 1001"},
		{[]string{"wake", "deploy/web", "--min", "two"}, "invalid value"},
		{[]string{"wake", "deploy/web", "--timeout", "0s"}, "--timeout"},
		{[]string{"wake", "deploy/web", "--timeout", "soon"}, "invalid value"},
		{[]string{"wake", "deploy/web", "-o", "yaml"}, "--output"},
		{[]string{"wake", "deploy/web", "--frobnicate"}, "not defined"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := parseArgs(tc.args)
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("parseArgs error = %v; want a usage error", err)
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Errorf("error %q does not mention %q", err, tc.message)
			}
			if exitCode(err) != exitUsage {
				t.Errorf("exit code %d; want %d", exitCode(err), exitUsage)
			}
		})
	}
	for _, args := range [][]string{{"-h"}, {"--help"}, {"wake", "deploy/web", "--help"}, {"help"}} {
		if _, err := parseArgs(args); !errors.Is(err, errHelp) {
			t.Errorf("parseArgs(%q) = %v; want errHelp", args, err)
		}
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, exitReady},
		{usagef("bad"), exitUsage},
		{&wake.FailedError{Reason: v1alpha1.ReasonTargetNotFound}, exitFailed},
		{fmt.Errorf("wrapped: %w", &wake.FailedError{Reason: v1alpha1.ReasonReadyTimeout}), exitFailed},
		{wake.ErrDeleted, exitFailed},
		{context.DeadlineExceeded, exitTimeout},
		{fmt.Errorf("wake: waiting for the scalerequest cache to sync: %w", context.DeadlineExceeded), exitTimeout},
		{context.Canceled, exitInterrupted},
		{apierrors.NewForbidden(v1alpha1.Resource("scalerequests"), "web", errors.New("no")), exitError},
		{&wake.MismatchError{}, exitError},
		{errors.New("connection refused"), exitError},
	}
	for _, tc := range tests {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("exitCode(%v) = %d; want %d", tc.err, got, tc.want)
		}
	}
}

// fakeController plays the controller on a fake clientset: when the ScaleRequest appears it
// writes the status given by mutate.
func fakeController(t *testing.T, cs *fake.Clientset, mutate func(sr *v1alpha1.ScaleRequest)) {
	t.Helper()
	w, err := cs.ZerowakeV1alpha1().ScaleRequests("shop").Watch(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	go func() {
		for ev := range w.ResultChan() {
			if ev.Type != watch.Added {
				continue
			}
			sr := ev.Object.(*v1alpha1.ScaleRequest).DeepCopy()
			sr.Status.ObservedGeneration = sr.Generation
			mutate(sr)
			_, _ = cs.ZerowakeV1alpha1().ScaleRequests("shop").UpdateStatus(context.Background(), sr, metav1.UpdateOptions{})
		}
	}()
}

func connectFake(cs versioned.Interface) connectFunc {
	return func(kubeconfig, kubeContext string) (versioned.Interface, coordinationclient.LeasesGetter, string, error) {
		return cs, nil, "shop", nil
	}
}

func runCLI(cs versioned.Interface, args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut, connectFake(cs))
	return code, out.String(), errOut.String()
}

func TestRunWaitReady(t *testing.T) {
	cs := fake.NewSimpleClientset()
	fakeController(t, cs, func(sr *v1alpha1.ScaleRequest) {
		g := sr.Generation
		sr.Status.Phase = v1alpha1.PhaseReady
		sr.Status.Replicas, sr.Status.ReadyReplicas = 2, 2
		sr.Status.ColdStartDuration = &metav1.Duration{Duration: 1234 * time.Millisecond}
		sr.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue,
			Reason: v1alpha1.ReasonTargetReady, ObservedGeneration: g}}
	})
	code, stdout, stderr := runCLI(cs, "wake", "deploy/web", "--min", "2", "--wait", "-o", "json")
	if code != exitReady {
		t.Fatalf("exit %d; stdout %q stderr %q", code, stdout, stderr)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("output is not one JSON object: %q: %v", stdout, err)
	}
	want := map[string]any{
		"namespace": "shop", "scaleRequest": "web", "action": "created", "result": "ready",
		"phase": "Ready", "reason": "TargetReady", "coldStartMs": 1234.0, "exitCode": 0.0, "minReplicas": 2.0,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v; want %v (output %s)", k, got[k], v, stdout)
		}
	}
	if tg := got["target"].(map[string]any); tg["kind"] != "Deployment" || tg["apiVersion"] != "apps/v1" || tg["name"] != "web" {
		t.Errorf("target = %v", tg)
	}
	sr, err := cs.ZerowakeV1alpha1().ScaleRequests("shop").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil || sr.Spec.MinReplicas != 2 || sr.Spec.ScaleTargetRef.Kind != "Deployment" {
		t.Fatalf("scalerequest = %+v, %v", sr, err)
	}

	// Text output, and the second run finds it ready and fresh.
	code, stdout, _ = runCLI(cs, "wake", "deployment/web", "--min", "2", "--wait")
	if code != exitReady || !strings.Contains(stdout, "already ready") || !strings.Contains(stdout, "cold start 1.234s") {
		t.Fatalf("second run: exit %d, stdout:\n%s", code, stdout)
	}
}

func TestRunFailed(t *testing.T) {
	cs := fake.NewSimpleClientset()
	fakeController(t, cs, func(sr *v1alpha1.ScaleRequest) {
		sr.Status.Phase = v1alpha1.PhaseFailed
		sr.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionScaled, Status: metav1.ConditionFalse,
			Reason: v1alpha1.ReasonTargetNotFound, Message: `deployments.apps "web" not found`, ObservedGeneration: sr.Generation}}
	})
	code, stdout, stderr := runCLI(cs, "wake", "deploy/web", "--wait")
	if code != exitFailed || !strings.Contains(stderr, "TargetNotFound") {
		t.Fatalf("exit %d; stdout %q stderr %q", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "Failed (TargetNotFound)") {
		t.Errorf("progress does not show the failure:\n%s", stdout)
	}
}

func TestRunTimeout(t *testing.T) {
	cs := fake.NewSimpleClientset() // no controller: never ready
	// Depending on load the deadline hits while starting, signalling or waiting: all time out.
	code, stdout, stderr := runCLI(cs, "wake", "deploy/web", "--wait", "--timeout", "200ms", "-o", "json")
	if code != exitTimeout {
		t.Fatalf("exit %d; stdout %q stderr %q", code, stdout, stderr)
	}
	var got result
	if err := json.Unmarshal([]byte(stdout), &got); err != nil || got.Result != "timeout" || got.ExitCode != exitTimeout {
		t.Fatalf("output %q (%v)", stdout, err)
	}
	code, _, stderr = runCLI(cs, "wake", "deploy/web", "--wait", "--timeout", "200ms")
	if code != exitTimeout || !strings.Contains(stderr, "timed out after 200ms") {
		t.Fatalf("exit %d; stderr %q", code, stderr)
	}
}

func TestRunWithoutWait(t *testing.T) {
	cs := fake.NewSimpleClientset()
	code, stdout, _ := runCLI(cs, "wake", "sts/db")
	if code != exitReady || !strings.Contains(stdout, "scalerequest shop/db: created (apps/v1 StatefulSet db, minReplicas 1)") {
		t.Fatalf("exit %d, stdout:\n%s", code, stdout)
	}
	// Again within the window: nothing written.
	code, stdout, _ = runCLI(cs, "wake", "sts/db", "-n", "shop")
	if code != exitReady || !strings.Contains(stdout, "already active") {
		t.Fatalf("exit %d, stdout:\n%s", code, stdout)
	}
}

func TestRunBadArgs(t *testing.T) {
	cs := fake.NewSimpleClientset()
	code, stdout, stderr := runCLI(cs, "wake", "pods/web")
	if code != exitUsage {
		t.Fatalf("exit %d; want %d", code, exitUsage)
	}
	if stdout != "" || !strings.Contains(stderr, `unknown kind "pods"`) || !strings.Contains(stderr, "Usage:") {
		t.Errorf("stdout %q, stderr:\n%s", stdout, stderr)
	}
	if len(cs.Actions()) != 0 {
		t.Errorf("bad arguments reached the API: %v", cs.Actions())
	}
	code, stdout, _ = runCLI(cs, "--help")
	if code != exitReady || !strings.Contains(stdout, "Exit codes:") {
		t.Errorf("--help: exit %d", code)
	}
}

func TestRunForbidden(t *testing.T) {
	cs := fake.NewSimpleClientset()
	cs.PrependReactor("list", "scalerequests", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(v1alpha1.Resource("scalerequests"), "", errors.New("RBAC says no"))
	})
	code, _, stderr := runCLI(cs, "wake", "deploy/web", "--wait")
	if code != exitError || !strings.Contains(stderr, "forbidden") {
		t.Fatalf("exit %d; stderr %q", code, stderr)
	}
}
