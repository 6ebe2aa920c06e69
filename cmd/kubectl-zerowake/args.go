package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/wake"
)

const usageText = `Signal demand for an idle workload through a zerowake ScaleRequest, and optionally wait for it.

Usage:
  kubectl zerowake wake KIND/NAME [flags]
  kubectl zerowake wake KIND NAME [flags]
  kubectl zerowake version           (or --version)

KIND is an alias (deployment, deploy, statefulset, sts, replicaset, rs, rollout, with plurals and
.group forms) or a CamelCase kind with --api-version for anything else that has a /scale subresource.

Examples:
  kubectl zerowake wake deployment/web -n shop
  kubectl zerowake wake deploy/web -n shop --min 2 --wait --timeout 60s
  kubectl zerowake wake rollout/api --wait -o json
  kubectl zerowake wake CloneSet/web --api-version apps.kruise.io/v1alpha1 --wait

Flags:
  -n, --namespace NS      namespace of the workload (default: the kubeconfig context's)
      --kubeconfig PATH   kubeconfig file (default: $KUBECONFIG or ~/.kube/config)
      --context NAME      kubeconfig context (default: the current context)
      --api-version GV    API version of the workload (default: the alias's, e.g. apps/v1)
      --min N             replicas to scale up to, 1..1000 (default 1)
      --wait              wait until the workload is ready (or the request fails)
      --timeout D         give up after this long, e.g. 60s, 5m (default 2m0s)
      --force             signal again even if the latest signal is fresh (not while it is served)
      --window D          freshness window; match the controller's --rescale-duration (default 30s)
  -o, --output FORMAT     text or json (default text)
  -h, --help              show this help

Exit codes:
  0   ready (with --wait), or signalled
  1   the controller reported the request Failed (the reason is printed), or it was deleted
  2   timed out
  3   could not talk to the cluster (kubeconfig, RBAC, CRD not installed, ...)
  64  bad arguments
  130 interrupted
`

// config is a parsed command line.
type config struct {
	target      wake.Target
	kubeconfig  string
	kubeContext string
	wait        bool
	timeout     time.Duration
	force       bool
	window      time.Duration
	output      string
}

// usageError is a bad command line; main prints it with the usage and exits exitUsage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// errHelp is returned for -h/--help.
var errHelp = errors.New("help requested")

type kindInfo struct{ apiVersion, kind string }

var (
	deploymentKind  = kindInfo{wake.AppsV1, "Deployment"}
	statefulSetKind = kindInfo{wake.AppsV1, "StatefulSet"}
	replicaSetKind  = kindInfo{wake.AppsV1, "ReplicaSet"}
	rolloutKind     = kindInfo{wake.ArgoRolloutsV1a1, "Rollout"}
)

// aliases maps lower-case kind aliases, as kubectl accepts them, to kinds.
var aliases = map[string]kindInfo{
	"deployment": deploymentKind, "deployments": deploymentKind, "deploy": deploymentKind,
	"deployment.apps": deploymentKind, "deployments.apps": deploymentKind,
	"statefulset": statefulSetKind, "statefulsets": statefulSetKind, "sts": statefulSetKind,
	"statefulset.apps": statefulSetKind, "statefulsets.apps": statefulSetKind,
	"replicaset": replicaSetKind, "replicasets": replicaSetKind, "rs": replicaSetKind,
	"replicaset.apps": replicaSetKind, "replicasets.apps": replicaSetKind,
	"rollout": rolloutKind, "rollouts": rolloutKind, "ro": rolloutKind,
	"rollout.argoproj.io": rolloutKind, "rollouts.argoproj.io": rolloutKind,
}

var (
	camelKind = regexp.MustCompile(`^[A-Z][A-Za-z0-9]*$`)
	// kubeVersion is the version syntax the ScaleRequest CRD accepts in scaleTargetRef.apiVersion.
	kubeVersion = regexp.MustCompile(`^v[1-9][0-9]*((alpha|beta)[1-9][0-9]*)?$`)
)

func aliasList() string {
	names := make([]string, 0, len(aliases))
	for a := range aliases {
		if !strings.Contains(a, ".") {
			names = append(names, a)
		}
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// resolveKind turns a KIND argument and --api-version into an apiVersion and a CamelCase kind.
func resolveKind(kind, apiVersion string) (string, string, error) {
	var k kindInfo
	switch info, ok := aliases[strings.ToLower(kind)]; {
	case ok:
		k = info
	case camelKind.MatchString(kind) && apiVersion != "":
		k = kindInfo{kind: kind}
	case camelKind.MatchString(kind):
		return "", "", usagef("kind %q needs --api-version (known aliases: %s)", kind, aliasList())
	default:
		return "", "", usagef("unknown kind %q (known aliases: %s; for other kinds pass the CamelCase kind and --api-version)", kind, aliasList())
	}
	if apiVersion != "" {
		gv, err := schema.ParseGroupVersion(apiVersion)
		if err != nil || !kubeVersion.MatchString(gv.Version) {
			return "", "", usagef("--api-version %q is not a version like v1 or a group/version like apps/v1", apiVersion)
		}
		k.apiVersion = apiVersion
	}
	return k.apiVersion, k.kind, nil
}

// parseArgs parses the plugin's arguments (without the program name). Flags may come before or
// after the positional arguments, as with kubectl.
func parseArgs(args []string) (*config, error) {
	cfg := &config{}
	var (
		namespace, apiVersion string
		minReplicas           int
		help                  bool
	)
	fs := flag.NewFlagSet("kubectl-zerowake", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, name := range []string{"n", "namespace"} {
		fs.StringVar(&namespace, name, "", "")
	}
	for _, name := range []string{"o", "output"} {
		fs.StringVar(&cfg.output, name, "text", "")
	}
	for _, name := range []string{"h", "help"} {
		fs.BoolVar(&help, name, false, "")
	}
	fs.StringVar(&cfg.kubeconfig, "kubeconfig", "", "")
	fs.StringVar(&cfg.kubeContext, "context", "", "")
	fs.StringVar(&apiVersion, "api-version", "", "")
	fs.IntVar(&minReplicas, "min", 1, "")
	fs.BoolVar(&cfg.wait, "wait", false, "")
	fs.DurationVar(&cfg.timeout, "timeout", 2*time.Minute, "")
	fs.BoolVar(&cfg.force, "force", false, "")
	fs.DurationVar(&cfg.window, "window", wake.DefaultWindow, "")

	// The standard flag package stops at the first positional argument; resume after each.
	var positional []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, errHelp
			}
			return nil, usagef("%v", err)
		}
		rest = fs.Args()
		if len(rest) == 0 {
			break
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		positional = append(positional, rest[0])
		rest = rest[1:]
	}
	if help {
		return nil, errHelp
	}

	if len(positional) == 0 {
		return nil, usagef("missing command (want: wake KIND/NAME)")
	}
	switch positional[0] {
	case "wake":
	case "help":
		return nil, errHelp
	default:
		return nil, usagef("unknown command %q (want: wake KIND/NAME)", positional[0])
	}
	var kind, name string
	switch ref := positional[1:]; {
	case len(ref) == 1 && strings.Contains(ref[0], "/"):
		kind, name, _ = strings.Cut(ref[0], "/")
	case len(ref) == 2 && !strings.Contains(ref[0], "/"):
		kind, name = ref[0], ref[1]
	case len(ref) == 0:
		return nil, usagef("missing workload: wake KIND/NAME, e.g. wake deployment/web")
	default:
		return nil, usagef("want one workload as KIND/NAME or KIND NAME, got %q", strings.Join(ref, " "))
	}
	if kind == "" || name == "" {
		return nil, usagef("want KIND/NAME, e.g. deployment/web; got %q", kind+"/"+name)
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return nil, usagef("invalid name %q: %s", name, strings.Join(errs, "; "))
	}
	av, k, err := resolveKind(kind, apiVersion)
	if err != nil {
		return nil, err
	}
	if namespace != "" {
		if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
			return nil, usagef("invalid namespace %q: %s", namespace, strings.Join(errs, "; "))
		}
	}
	if minReplicas < 1 || minReplicas > v1alpha1.MaxMinReplicas {
		return nil, usagef("--min %d is outside 1..%d", minReplicas, v1alpha1.MaxMinReplicas)
	}
	if cfg.timeout <= 0 {
		return nil, usagef("--timeout must be positive, got %v", cfg.timeout)
	}
	if cfg.window <= 0 {
		return nil, usagef("--window must be positive, got %v", cfg.window)
	}
	if cfg.output != "text" && cfg.output != "json" {
		return nil, usagef("--output must be text or json, got %q", cfg.output)
	}
	cfg.target = wake.Target{Namespace: namespace, APIVersion: av, Kind: k, Name: name, MinReplicas: int32(minReplicas)}
	return cfg, nil
}
