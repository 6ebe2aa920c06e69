// Package faults proves that a wake signal carried in a ScaleRequest cannot be lost, and that
// the controller is safe to give /scale rights to: it SIGKILLs and SIGTERMs the controller
// binary, restarts kube-apiserver under it, fights it, pulls targets, requests and kinds out
// from under it, and checks its identity's rights. It runs on its own local control plane
// (started by TestMain), with the apiserver's audit log on, so that every request a controller
// identity makes can be attributed and timed.
//
// Tests here run one at a time: they measure (takeover, reconnect, rescale spacing) and the
// machine they run on is small, so running them side by side would only blur the figures. The
// figures (takeover and reconnect times, rescales per window) are logged (go test -v); speed is
// never asserted. Assertions are on behaviour, read from the apiserver's audit log, the objects
// and the controller's metrics, including the lower bounds the design promises: writes to a
// target at least a rescale duration apart, a lease taken over no sooner than it expired. Run
// with -count=1: each run needs the fresh cluster TestMain starts (it uses fixed names).
package faults

import (
	"context"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/zerowake/zerowake/e2e/framework"
	"github.com/zerowake/zerowake/generated/clientset/versioned"
	"github.com/zerowake/zerowake/hack/localcluster"
)

var (
	cluster *localcluster.Cluster
	kube    kubernetes.Interface
	client  versioned.Interface
	// binary is the controller built from cmd/zerowake-controller.
	binary string
)

// auditPolicy records every request made by an identity in zerowake-system (the controllers'
// ServiceAccounts) and nothing else. Lease writes are logged with their body, so the log shows
// who held the lease when, and when it was released.
var auditPolicy = []byte(`apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Request
  userGroups: ["system:serviceaccounts:zerowake-system"]
  verbs: [create, update, patch]
  resources: [{group: coordination.k8s.io, resources: [leases]}]
- level: Metadata
  userGroups: ["system:serviceaccounts:zerowake-system"]
- level: None
`)

func TestMain(m *testing.M) {
	localcluster.Main(m, localcluster.Options{AuditPolicy: auditPolicy}, setup)
}

func setup(c *localcluster.Cluster) error {
	cluster = c
	kube = c.Client()
	var err error
	if client, err = versioned.NewForConfig(c.RESTConfig()); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Install exactly as a user would: the CRD, then the controller's manifests.
	if err := framework.Install(ctx, c); err != nil {
		return err
	}
	binary, err = framework.BuildController(ctx, c.Dir())
	return err
}
