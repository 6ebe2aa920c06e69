// Command kubectl-zerowake signals demand for an idle workload through a zerowake ScaleRequest
// and can wait until the controller reports it ready. Installed on the PATH it is a kubectl
// plugin: kubectl zerowake wake deployment/web -n shop --min 2 --wait --timeout 60s.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	coordinationclient "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/zerowake/zerowake/activity"
	"github.com/zerowake/zerowake/generated/clientset/versioned"
	"github.com/zerowake/zerowake/internal/version"
	"github.com/zerowake/zerowake/wake"
)

// Exit codes.
const (
	exitReady       = 0
	exitFailed      = 1
	exitTimeout     = 2
	exitError       = 3
	exitUsage       = 64
	exitInterrupted = 130
)

const fieldManager = "kubectl-zerowake"

// connectFunc returns a clientset, the Leases client through which a wake records activity (nil:
// none), and the kubeconfig context's namespace.
type connectFunc func(kubeconfig, kubeContext string) (versioned.Interface, coordinationclient.LeasesGetter, string, error)

func main() {
	// client-go logs retries through klog; the CLI reports errors itself.
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, connect)
	stop()
	os.Exit(code)
}

// connect loads the kubeconfig like kubectl does.
func connect(kubeconfig, kubeContext string) (versioned.Interface, coordinationclient.LeasesGetter, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext})
	rc, err := cc.ClientConfig()
	if err != nil {
		return nil, nil, "", err
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, nil, "", err
	}
	rc.UserAgent = fieldManager
	cs, err := versioned.NewForConfig(rc)
	if err != nil {
		return nil, nil, "", err
	}
	leases, err := coordinationclient.NewForConfig(rc)
	if err != nil {
		return nil, nil, "", err
	}
	return cs, leases, ns, nil
}

// result is what --output json prints: one object.
type result struct {
	Namespace    string       `json:"namespace"`
	ScaleRequest string       `json:"scaleRequest"`
	Target       targetJSON   `json:"target"`
	MinReplicas  int32        `json:"minReplicas"`
	Action       string       `json:"action,omitempty"`
	Result       string       `json:"result"` // signalled, ready, failed, timeout, interrupted, error
	Phase        string       `json:"phase,omitempty"`
	Generation   int64        `json:"generation,omitempty"`
	Replicas     *replicasOut `json:"replicas,omitempty"`
	Reason       string       `json:"reason,omitempty"`
	Message      string       `json:"message,omitempty"`
	ColdStartMs  *int64       `json:"coldStartMs,omitempty"`
	Error        string       `json:"error,omitempty"`
	ExitCode     int          `json:"exitCode"`
}

type targetJSON struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Name       string `json:"name"`
}

type replicasOut struct {
	Replicas int32 `json:"replicas"`
	Ready    int32 `json:"ready"`
}

// exitCode maps an error of a run to the process exit code.
func exitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil:
		return exitReady
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, wake.ErrFailed), errors.Is(err, wake.ErrDeleted):
		return exitFailed
	case errors.Is(err, context.DeadlineExceeded):
		return exitTimeout
	case errors.Is(err, context.Canceled):
		return exitInterrupted
	}
	return exitError
}

func resultName(code int, waited bool) string {
	switch code {
	case exitReady:
		if waited {
			return "ready"
		}
		return "signalled"
	case exitFailed:
		return "failed"
	case exitTimeout:
		return "timeout"
	case exitInterrupted:
		return "interrupted"
	}
	return "error"
}

// run is the whole command; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, connectTo connectFunc) int {
	if len(args) == 1 && (args[0] == "--version" || args[0] == "version") {
		fmt.Fprintln(stdout, "kubectl-zerowake", version.Get())
		return exitReady
	}
	cfg, err := parseArgs(args)
	if errors.Is(err, errHelp) {
		fmt.Fprint(stdout, usageText)
		return exitReady
	}
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n\n%s", err, usageText)
		return exitUsage
	}

	t := cfg.target
	out := &result{
		Target:      targetJSON{t.APIVersion, t.Kind, t.Name},
		MinReplicas: t.MinReplicas,
	}
	text := cfg.output == "text"
	progress := func(format string, a ...any) {
		if text {
			fmt.Fprintf(stdout, "scalerequest %s/%s: %s\n", t.Namespace, t.Name, fmt.Sprintf(format, a...))
		}
	}
	finish := func(err error) int {
		code := exitCode(err)
		out.ExitCode = code
		out.Result = resultName(code, cfg.wait)
		if err != nil {
			out.Error = err.Error()
			var fe *wake.FailedError
			if errors.As(err, &fe) {
				out.Reason, out.Message = fe.Reason, fe.Message
			}
		}
		if !text {
			enc := json.NewEncoder(stdout)
			_ = enc.Encode(out)
			return code
		}
		switch code {
		case exitReady:
		case exitTimeout:
			fmt.Fprintf(stderr, "error: timed out after %v waiting for scalerequest %s/%s (phase %s)\n", cfg.timeout, t.Namespace, t.Name, orUnknown(out.Phase))
		case exitInterrupted:
			fmt.Fprintln(stderr, "interrupted")
		default:
			fmt.Fprintf(stderr, "error: %v\n", err)
		}
		return code
	}

	cs, leases, ns, err := connectTo(cfg.kubeconfig, cfg.kubeContext)
	if err != nil {
		return finish(fmt.Errorf("loading kubeconfig: %w", err))
	}
	if t.Namespace == "" {
		t.Namespace = ns
		if t.Namespace == "" {
			t.Namespace = metav1.NamespaceDefault
		}
	}
	out.Namespace, out.ScaleRequest = t.Namespace, t.Name

	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()

	window := cfg.window
	if cfg.force {
		window = time.Nanosecond // every signal is stale: bump unless it is being served
	}
	var recorder wake.ActivityRecorder
	if leases != nil {
		// A wake by hand is activity too: a workload that sleeps when idle starts its idle
		// time afresh.
		recorder = activity.Once{Leases: leases, Identity: fieldManager}
	}
	c := wake.New(cs, wake.Options{
		Namespace:    t.Namespace,
		Window:       window,
		FieldManager: fieldManager,
		Activity:     recorder,
		// Watch only this one request: least data, and RBAC on one namespace is enough.
		TweakListOptions: func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", t.Name).String()
		},
	})
	if err := c.Start(ctx); err != nil {
		return finish(explain(err))
	}
	defer c.Stop()

	action, err := c.Wake(ctx, t)
	if err != nil {
		return finish(explain(err))
	}
	out.Action = action.String()
	record := func(s wake.Status) {
		if s.Exists {
			out.Phase, out.Generation = string(s.Phase), s.Generation
			out.Replicas = &replicasOut{s.Replicas, s.ReadyReplicas}
			out.Reason, out.Message = s.Reason, s.Message
		}
	}
	progress("%s (%s %s %s, minReplicas %d)", describeAction(action), t.APIVersion, t.Kind, t.Name, t.MinReplicas)
	if !cfg.wait {
		record(c.Status(t))
		return finish(nil)
	}

	cold, err := c.WaitReadyWithProgress(ctx, t, func(s wake.Status) {
		record(s)
		progress("%s", describeStatus(s))
	})
	if err != nil {
		return finish(err)
	}
	ms := cold.Milliseconds()
	out.ColdStartMs = &ms
	progress("ready, cold start %v", cold)
	return finish(nil)
}

func describeAction(a wake.Action) string {
	switch a {
	case wake.ActionCreated:
		return "created"
	case wake.ActionBumped:
		return "bumped requestedAt (signalled again)"
	case wake.ActionAlreadyActive:
		return "already active, not written"
	case wake.ActionAlreadyReady:
		return "already ready and fresh, not written"
	case wake.ActionRecentlyFailed:
		return "failed less than the window ago, not written (use --force to signal again)"
	case wake.ActionRecentlySignalled:
		return "recently signalled, not written"
	}
	return a.String()
}

func describeStatus(s wake.Status) string {
	if !s.Exists {
		return "waiting for the request to appear"
	}
	if !s.Observed {
		return fmt.Sprintf("generation %d not yet observed by the controller", s.Generation)
	}
	line := orUnknown(string(s.Phase))
	if s.Phase != "" && !s.Failed {
		line += fmt.Sprintf(", %d/%d ready", s.ReadyReplicas, s.MinReplicas)
	}
	if s.Reason != "" {
		line += " (" + s.Reason + ")"
	}
	return line
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// explain adds a hint to API errors people commonly hit.
func explain(err error) error {
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%w (the kubeconfig user needs get/list/watch/create/patch on scalerequests.zerowake.dev)", err)
	case apierrors.IsNotFound(err):
		var se apierrors.APIStatus
		if errors.As(err, &se) {
			if d := se.Status().Details; d == nil || d.Name == "" { // the resource, not an object
				return fmt.Errorf("%w (is the ScaleRequest CRD installed? kubectl apply -k crds/)", err)
			}
		}
	}
	return err
}
