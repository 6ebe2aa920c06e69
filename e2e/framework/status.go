package framework

import (
	"fmt"
	"strings"

	"github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
)

// DescribeStatus renders a ScaleRequest's status on one line, for a failing test's message.
func DescribeStatus(sr *v1alpha1.ScaleRequest) string {
	if sr == nil {
		return "<none>"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "generation=%d observed=%d phase=%s replicas=%d ready=%d", sr.Generation, sr.Status.ObservedGeneration,
		sr.Status.Phase, sr.Status.Replicas, sr.Status.ReadyReplicas)
	for _, c := range sr.Status.Conditions {
		fmt.Fprintf(&b, "; %s=%s %s (gen %d): %s", c.Type, c.Status, c.Reason, c.ObservedGeneration, c.Message)
	}
	return b.String()
}
