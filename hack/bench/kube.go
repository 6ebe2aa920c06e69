package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/scale"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
)

// createNamespace creates ns and waits for its default ServiceAccount, without which the
// ReplicaSet controller cannot create pods.
func createNamespace(ctx context.Context, kube kubernetes.Interface, ns string) error {
	_, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", ns, err)
	}
	return poll(ctx, 60*time.Second, 50*time.Millisecond, "the default ServiceAccount in "+ns, func(ctx context.Context) (bool, error) {
		_, err := kube.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
}

// deleteNamespaces deletes the namespaces and waits until they are gone, so that what they held
// (Deployments the inventory follows, pods the control plane runs) weighs on no later scenario.
// With deploymentsOnly it waits only until their Deployments are gone, which is what the
// controller's inventory follows; their pods go on being deleted in the background. Cleanup
// only: one still there after timeout is logged, not an error.
func deleteNamespaces(ctx context.Context, kube kubernetes.Interface, timeout time.Duration, deploymentsOnly bool, namespaces ...string) error {
	for _, ns := range namespaces {
		if err := kube.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting namespace %s: %w", ns, err)
		}
	}
	what := fmt.Sprintf("namespaces %v to be deleted", namespaces)
	if deploymentsOnly {
		what = fmt.Sprintf("the Deployments of namespaces %v to be deleted", namespaces)
	}
	t := time.Now()
	var err error
	if deploymentsOnly {
		// The namespace controller deletes pods before Deployments: for 10,000 of them, half an
		// hour on this control plane. So the benchmark deletes the Deployments itself.
		background := metav1.DeletePropagationBackground
		err = deleteUntilGone(ctx, timeout, what, namespaces,
			func(ctx context.Context, ns string) (bool, error) {
				list, err := kube.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{Limit: 1})
				return err == nil && len(list.Items) == 0, err
			},
			func(ctx context.Context, ns string) error {
				return kube.AppsV1().Deployments(ns).DeleteCollection(ctx, metav1.DeleteOptions{PropagationPolicy: &background}, metav1.ListOptions{})
			})
	} else {
		err = poll(ctx, timeout, time.Second, what, func(ctx context.Context) (bool, error) {
			for _, ns := range namespaces {
				if _, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					return false, nil
				}
			}
			return true, nil
		})
	}
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		logf("cleanup: %v", err)
		return nil
	}
	logf("cleanup: %s took %s", what, time.Since(t).Round(time.Millisecond))
	return nil
}

// deleteUntilGone deletes a collection in each namespace until none of it is left. One
// DeleteCollection of 10,000 objects outlasts the apiserver's request timeout; each call deletes
// what it reaches before then, so the call is re-issued (its error kept only for the timeout's
// message) until empty reports none left in every namespace.
func deleteUntilGone(ctx context.Context, timeout time.Duration, what string, namespaces []string,
	empty func(ctx context.Context, ns string) (bool, error), deleteCollection func(ctx context.Context, ns string) error) error {
	return poll(ctx, timeout, time.Second, what, func(ctx context.Context) (bool, error) {
		for _, ns := range namespaces {
			done, err := empty(ctx, ns)
			if err != nil {
				return false, err
			}
			if !done {
				if err := deleteCollection(ctx, ns); err != nil && !apierrors.IsNotFound(err) {
					return false, err
				}
				return false, nil
			}
		}
		return true, nil
	})
}

// poll is for setup only (never for timing): it calls check every interval until it is done.
func poll(ctx context.Context, timeout, interval time.Duration, what string, check func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var lastErr error
	for {
		done, err := check(ctx)
		if err != nil {
			lastErr = err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("timed out after %s waiting for %s: %w", timeout, what, lastErr)
			}
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		case <-time.After(interval):
		}
	}
}

// deployment is a target its owner marked as wakeable (the controller scales only those).
func deployment(ns, name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{v1alpha1.LabelWake: "true"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: "registry.example/app:1",
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
						corev1.ResourceCPU: resource.MustParse("10m"),
					}},
				}}},
			},
		},
	}
}

func scaleRequest(ns, name string) *v1alpha1.ScaleRequest {
	return &v1alpha1.ScaleRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.ScaleRequestSpec{
			ScaleTargetRef: v1alpha1.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: name},
			MinReplicas:    1,
			RequestedAt:    &metav1.MicroTime{Time: time.Now()},
		},
	}
}

// createDeployments creates idle (replicas 0) Deployments named names in ns and waits until
// the deployment controller has observed each, so that its backlog does not run into the
// measurement that follows.
func createDeployments(ctx context.Context, kube kubernetes.Interface, ns string, names []string, replicas int32) error {
	if err := createDeploymentsNoWait(ctx, kube, ns, names, replicas, true); err != nil {
		return err
	}
	return waitObserved(ctx, kube, ns, len(names))
}

// createDeploymentsNoWait creates Deployments without waiting; unmarked ones are the cluster's
// other workloads, which no ScaleRequest may wake.
func createDeploymentsNoWait(ctx context.Context, kube kubernetes.Interface, ns string, names []string, replicas int32, marked bool) error {
	err := parallel(ctx, len(names), 32, func(ctx context.Context, i int) error {
		d := deployment(ns, names[i], replicas)
		if !marked {
			d.Labels = nil
		}
		_, err := kube.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("creating deployments in %s: %w", ns, err)
	}
	return nil
}

// waitObserved waits until the deployment controller has observed n Deployments in ns. Each
// look lists them all, so it looks less often the more there are: listing 10,000 Deployments
// twice a second took a share of the API server that slowed the very controller waited for.
func waitObserved(ctx context.Context, kube kubernetes.Interface, ns string, n int) error {
	timeout := 60*time.Second + time.Duration(n)*60*time.Millisecond
	interval := 500*time.Millisecond + time.Duration(n)*500*time.Microsecond
	return poll(ctx, timeout, interval, fmt.Sprintf("the %d deployments in %s to be observed", n, ns), func(ctx context.Context) (bool, error) {
		list, err := kube.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err != nil {
			return false, err
		}
		observed := 0
		for _, d := range list.Items {
			if d.Status.ObservedGeneration >= d.Generation {
				observed++
			}
		}
		return observed >= n, nil
	})
}

// parallel runs fn(0..n-1) on workers goroutines and returns the first error.
func parallel(parent context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	var next atomic.Int64
	var once sync.Once
	var firstErr error
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr == nil && parent.Err() != nil {
		return parent.Err()
	}
	return firstErr
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%05d", prefix, i)
	}
	return out
}

// drain scales the Deployments named targets in ns to zero and removes their pods at once, then
// waits until ns holds no pods. Each burst drains its floor before the controller's turn, so
// that both run on a control plane holding the same pods: the floor's thousands left running
// would make every later scheduling cycle, status update and watch costlier for the controller
// alone.
func drain(ctx context.Context, kube kubernetes.Interface, scales scale.ScalesGetter, ns string, targets []string, timeout time.Duration) error {
	t := time.Now()
	err := parallel(ctx, len(targets), 100, func(ctx context.Context, i int) error {
		_, err := scales.Scales(ns).Patch(ctx, deploymentsGVR, targets[i], types.MergePatchType, []byte(`{"spec":{"replicas":0}}`), metav1.PatchOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("scaling the Deployments of %s to zero: %w", ns, err)
	}
	// Once the deployment controller has seen every scale-down, no ReplicaSet wants a pod, so
	// deleting them without the kubelet's (kwok's) graceful round trip loses nothing.
	if err := waitObserved(ctx, kube, ns, len(targets)); err != nil {
		return err
	}
	zero := int64(0)
	err = deleteUntilGone(ctx, timeout, "the pods of "+ns+" to be gone", []string{ns},
		func(ctx context.Context, ns string) (bool, error) {
			list, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{Limit: 1})
			return err == nil && len(list.Items) == 0, err
		},
		func(ctx context.Context, ns string) error {
			return kube.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
		})
	if err != nil {
		return err
	}
	logf("cleanup: draining %d Deployments of %s took %s", len(targets), ns, time.Since(t).Round(time.Millisecond))
	return nil
}
