package localcluster

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Main is the body of a TestMain for a package of integration tests. It starts a cluster,
// hands it to setup (which typically stores it in a package variable and may install CRDs),
// runs the tests, stops the cluster and exits with the tests' status.
//
// The cluster is stopped whatever happens: tests fail, setup panics, or the process gets
// SIGINT or SIGTERM. If the process dies abruptly (go test -timeout, SIGKILL), the kernel
// kills the components. When tests fail, the cluster's directory is kept and its path printed
// so that the component logs can be read. With -short, no cluster starts and no test runs.
//
//	var cluster *localcluster.Cluster
//
//	func TestMain(m *testing.M) {
//		localcluster.Main(m, localcluster.Options{}, func(c *localcluster.Cluster) error {
//			cluster = c
//			return nil
//		})
//	}
func Main(m *testing.M, opts Options, setup func(*Cluster) error) {
	os.Exit(runMain(m, opts, setup))
}

func runMain(m *testing.M, opts Options, setup func(*Cluster) error) int {
	flag.Parse() // testing.Short needs the flags parsed; m.Run would do it too late.
	if testing.Short() {
		fmt.Fprintln(os.Stderr, "localcluster: -short: skipping this package's tests, which need a control plane")
		return 0
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	var (
		mu          sync.Mutex
		cluster     *Cluster
		interrupted bool
	)
	go func() {
		sig, ok := <-sigs
		if !ok {
			return
		}
		// A second signal should kill us at once; the kernel then kills the components.
		signal.Reset(syscall.SIGINT, syscall.SIGTERM)
		fmt.Fprintf(os.Stderr, "localcluster: %v: stopping the control plane\n", sig)
		mu.Lock()
		interrupted = true
		c := cluster
		mu.Unlock()
		cancel()
		if c != nil {
			c.keepDir.Store(true)
			_ = c.Stop()
			os.Exit(1)
		}
		// Otherwise Start is under way and cleans up when it sees ctx canceled.
	}()

	c, err := Start(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mu.Lock()
	if interrupted {
		mu.Unlock()
		_ = c.Stop()
		return 1
	}
	cluster = c
	mu.Unlock()

	code := 1
	defer func() {
		if code != 0 {
			c.keepDir.Store(true)
		}
		t := time.Now()
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "localcluster: stopping:", err)
		}
		c.logf("stopped in %s", round(time.Since(t)))
	}()
	if setup != nil {
		if err := setup(c); err != nil {
			fmt.Fprintln(os.Stderr, "localcluster: setup:", err)
			return code
		}
	}
	code = m.Run()
	return code
}

// NewNamespace creates a namespace with a unique name derived from the test's, waits until its
// default ServiceAccount exists (pods are refused without it), and deletes it when the test
// ends.
func NewNamespace(t testing.TB, c *Cluster) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns, err := c.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: namespacePrefix(t.Name())},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating a namespace: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.client.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("deleting namespace %s: %v", ns.Name, err)
		}
	})
	for {
		_, err := c.client.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return ns.Name
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for the default ServiceAccount in %s: %v (see %s)", ns.Name, err, c.LogFile(controllerManagerName))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// namespacePrefix turns a test name into the start of a namespace name: lower case
// alphanumerics and dashes, short enough to leave room for the server's random suffix.
func namespacePrefix(testName string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "-"):
			b.WriteByte('-')
		}
	}
	prefix := strings.Trim(b.String(), "-")
	if len(prefix) > 40 {
		prefix = strings.TrimRight(prefix[:40], "-")
	}
	if prefix == "" {
		prefix = "test"
	}
	return prefix + "-"
}
