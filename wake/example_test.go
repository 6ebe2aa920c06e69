package wake_test

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/generated/clientset/versioned/fake"
	"github.com/zerowake/zerowake/wake"
)

// A resolver holding a request for an idle Deployment signals demand, then waits for the
// controller to report the Deployment ready. A fake clientset stands in for the API server, and
// the controller's status write is played by hand.
func Example() {
	ctx := context.Background()
	clientset := fake.NewSimpleClientset() // in a resolver: versioned.NewForConfig(restConfig)

	c := wake.New(clientset, wake.Options{Namespace: "shop"})
	if err := c.Start(ctx); err != nil {
		panic(err)
	}
	defer c.Stop()

	target := wake.Deployment("shop", "web")
	action, err := c.Wake(ctx, target)
	fmt.Println("wake:", action, err)

	// Every further request within the window costs nothing.
	action, err = c.Wake(ctx, target)
	fmt.Println("wake again:", action, err)

	// The controller scales the Deployment and reports it ready.
	sr, _ := clientset.ZerowakeV1alpha1().ScaleRequests("shop").Get(ctx, "web", metav1.GetOptions{})
	sr.Status = v1alpha1.ScaleRequestStatus{
		ObservedGeneration: sr.Generation,
		Phase:              v1alpha1.PhaseReady,
		ColdStartDuration:  &metav1.Duration{Duration: 1500 * time.Millisecond},
		Conditions: []metav1.Condition{{
			Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue,
			Reason: v1alpha1.ReasonTargetReady, ObservedGeneration: sr.Generation,
		}},
	}
	if _, err := clientset.ZerowakeV1alpha1().ScaleRequests("shop").UpdateStatus(ctx, sr, metav1.UpdateOptions{}); err != nil {
		panic(err)
	}

	coldStart, err := c.WaitReady(ctx, target)
	fmt.Println("ready after", coldStart, err)
	// Output:
	// wake: created <nil>
	// wake again: recently-signalled <nil>
	// ready after 1.5s <nil>
}
