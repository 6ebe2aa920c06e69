package wake

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/generated/clientset/versioned/fake"
)

func (c *Client) entryCount() int {
	n := 0
	c.entries.Range(func(any, any) bool { n++; return true })
	return n
}

// A write that creates nothing (Forbidden here; an invalid name or a missing namespace alike)
// must not leave an entry behind once its error backoff has passed: otherwise a caller naming
// ever new targets grows the client without creating a single object.
func TestFailedWritesAreForgotten(t *testing.T) {
	cs := fake.NewSimpleClientset()
	cs.PrependReactor("create", "scalerequests", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(v1alpha1.Resource("scalerequests"), "x", errors.New("no RBAC"))
	})
	clock := clocktesting.NewFakeClock(time.Now())
	c := New(cs, Options{Clock: clock, ErrorBackoff: time.Second})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()

	const n = 1000
	for i := range n {
		if _, err := c.Wake(context.Background(), Deployment("shop", fmt.Sprintf("web-%d", i))); !apierrors.IsForbidden(err) {
			t.Fatalf("Wake %d = %v; want Forbidden", i, err)
		}
	}
	// Within the backoff the errors are remembered (a retry costs no API call).
	if got := c.entryCount(); got != n {
		t.Fatalf("%d entries within the backoff; want %d", got, n)
	}
	clock.Step(2 * time.Second)
	if _, err := c.Wake(context.Background(), Deployment("shop", "one-more")); !apierrors.IsForbidden(err) {
		t.Fatal(err)
	}
	if got := c.entryCount(); got > 1 {
		t.Errorf("%d entries after %d failed writes whose backoff has passed; want at most the latest one", got, n+1)
	}
}

// Without a backoff, a failed write is not remembered at all.
func TestFailedWritesWithoutBackoffLeaveNothing(t *testing.T) {
	cs := fake.NewSimpleClientset()
	cs.PrependReactor("create", "scalerequests", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewBadRequest("invalid name")
	})
	c := New(cs, Options{ErrorBackoff: -1})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	for i := range 100 {
		_, _ = c.Wake(context.Background(), Deployment("shop", fmt.Sprintf("web-%d", i)))
	}
	if got := c.entryCount(); got != 0 {
		t.Errorf("%d entries after failed writes with no backoff; want 0", got)
	}
}
