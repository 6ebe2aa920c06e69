package main

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

// TestLostLeaseExitsWithoutDraining: when another holder takes the lease, the leader exits
// while its work is still running, instead of first draining it: a drain's writes could overlap
// with the new leader's.
func TestLostLeaseExitsWithoutDraining(t *testing.T) {
	kube := fake.NewClientset()
	opts := &options{leaseName: "zerowake", leaseNamespace: "zerowake-system",
		leaseDuration: 900 * time.Millisecond, leaseRenewDeadline: 600 * time.Millisecond, leaseRetryPeriod: 100 * time.Millisecond}

	var workCtx atomic.Pointer[context.Context]
	started := make(chan struct{})
	work := func(ctx context.Context) error {
		workCtx.Store(&ctx)
		close(started)
		<-ctx.Done()
		return nil
	}
	exited := make(chan bool, 1) // whether work was still running when the process would exit
	saved := exitOnLostLease
	t.Cleanup(func() { exitOnLostLease = saved })
	exitOnLostLease = func(logr.Logger, string) {
		exited <- (*workCtx.Load()).Err() == nil
		runtime.Goexit() // as os.Exit would, go no further
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	result := make(chan error, 1)
	go func() { result <- runAsLeader(ctx, opts, kube, nil, work, logr.Discard()) }()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("never became leader")
	}

	// Another replica takes the lease, as a partitioned leader would find it.
	leases := kube.CoordinationV1().Leases(opts.leaseNamespace)
	lease, err := leases.Get(ctx, opts.leaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lease.Spec.HolderIdentity = ptr.To("thief")
	lease.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
	lease.Spec.LeaseDurationSeconds = ptr.To[int32](60)
	if _, err := leases.Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The fake clientset does not check resourceVersions; the API server would refuse the old
	// leader's renewals of a lease it no longer holds, so refuse them here too.
	kube.PrependReactor("update", "leases", func(action k8stesting.Action) (bool, kruntime.Object, error) {
		if l := action.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease); ptr.Deref(l.Spec.HolderIdentity, "") != "thief" {
			return true, nil, apierrors.NewConflict(coordinationv1.Resource("leases"), opts.leaseName, errors.New("the lease was taken"))
		}
		return false, nil, nil
	})

	select {
	case running := <-exited:
		if !running {
			t.Fatal("work was stopped (and drained) before the exit")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not exit after losing the lease")
	}
	select {
	case err := <-result:
		if err == nil || !strings.Contains(err.Error(), "lost the leader election lease") {
			t.Fatalf("runAsLeader returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("runAsLeader did not return after losing the lease")
	}
}

// TestLostLeaseWhileDrainingExits: after SIGTERM the leader drains in-flight work; if its lease
// is lost meanwhile (a renewal fails, another replica takes over), it exits at once instead of
// letting the drain go on writing beside the successor.
func TestLostLeaseWhileDrainingExits(t *testing.T) {
	kube := fake.NewClientset()
	opts := &options{leaseName: "zerowake", leaseNamespace: "zerowake-system",
		leaseDuration: 900 * time.Millisecond, leaseRenewDeadline: 600 * time.Millisecond, leaseRetryPeriod: 100 * time.Millisecond}

	started, draining := make(chan struct{}), make(chan struct{})
	stillWorking := make(chan struct{})
	work := func(ctx context.Context) error {
		close(started)
		<-ctx.Done() // the signal: drain what is in flight
		close(draining)
		<-stillWorking // a sync that is still writing
		return nil
	}
	exited := make(chan struct{}, 1)
	saved := exitOnLostLease
	t.Cleanup(func() { exitOnLostLease = saved; close(stillWorking) })
	exitOnLostLease = func(logr.Logger, string) {
		exited <- struct{}{}
		runtime.Goexit()
	}

	ctx, signal := context.WithCancel(context.Background())
	defer signal()
	go func() { _ = runAsLeader(ctx, opts, kube, nil, work, logr.Discard()) }()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("never became leader")
	}
	signal()
	<-draining

	// Renewals now fail, as they do for a leader cut off from the API server.
	kube.PrependReactor("update", "leases", func(k8stesting.Action) (bool, kruntime.Object, error) {
		return true, nil, apierrors.NewServerTimeout(coordinationv1.Resource("leases"), "update", 1)
	})
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("kept draining after the lease was lost; a successor may already be writing")
	}
}

// TestMissingLeaseNamespaceStopsWithAClearError: a Lease namespace that does not exist makes
// the controller stop with a message that says what to do, rather than retry forever while
// serving nothing.
func TestMissingLeaseNamespaceStopsWithAClearError(t *testing.T) {
	kube := fake.NewClientset()
	kube.PrependReactor("create", "leases", func(k8stesting.Action) (bool, kruntime.Object, error) {
		return true, nil, apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, "zerowake-system")
	})
	opts := &options{leaseName: "zerowake", leaseNamespace: "zerowake-system",
		leaseDuration: 900 * time.Millisecond, leaseRenewDeadline: 600 * time.Millisecond, leaseRetryPeriod: 100 * time.Millisecond}
	result := make(chan error, 1)
	go func() {
		result <- runAsLeader(context.Background(), opts, kube, nil, func(context.Context) error {
			t.Error("worked without a lease")
			return nil
		}, logr.Discard())
	}()
	select {
	case err := <-result:
		if err == nil || !strings.Contains(err.Error(), `namespace "zerowake-system" does not exist`) ||
			!strings.Contains(err.Error(), "--leader-election-namespace") || !strings.Contains(err.Error(), "--leader-elect=false") {
			t.Fatalf("want an error naming the namespace and the ways out, got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still retrying the Lease after its namespace was found missing")
	}
}
