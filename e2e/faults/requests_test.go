package faults

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// coldWakeBudget is what one cold wake may cost the API server: the controller's requests in
// the request's namespace, by verb and resource, once the kind has been seen before (its
// discovery and the inventory's informer are paid once per kind, not per wake). The README's
// table of requests per cold wake shows the same row; a change that adds a request to the
// wake path fails TestRequestsPerColdWake until both are changed.
var coldWakeBudget = map[string]int{
	"PATCH deployments/scale":  1, // the scale write, from zero in one request
	"PUT scalerequests/status": 2, // Scaled, then Ready
	"POST events":              2, // ScaledFromZero, TargetReady
}

// auditVerbs maps the audit log's verbs to the HTTP methods the controller's own request
// counter (zerowake_api_requests_total) names them by.
var auditVerbs = map[string]string{
	"get": "GET", "list": "LIST", "watch": "WATCH", "create": "POST", "update": "PUT", "patch": "PATCH",
	"delete": "DELETE", "deletecollection": "DELETE",
}

// TestRequestsPerColdWake counts, from the apiserver's audit log, the requests the controller
// makes for one cold wake (an idle Deployment, a new ScaleRequest, until it is Ready), and
// fails if any verb and resource exceeds coldWakeBudget or is not in it at all.
func TestRequestsPerColdWake(t *testing.T) {
	f := newFixture(t)
	ns := newTidyNamespace(t)
	id := newIdentity(t, "requests")
	ctx := testContext(t, 2*time.Minute)
	for _, name := range []string{"warm", "cold"} {
		if _, err := kube.AppsV1().Deployments(ns).Create(ctx, deployment(ns, name, 0), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	f.start("requests", id, "faults-requests")
	srs := client.ZerowakeV1alpha1().ScaleRequests(ns)

	// A first wake pays what is paid once per kind.
	if _, err := srs.Create(ctx, scaleRequest(ns, "warm", 1), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitAllReady(ns, 1, time.Minute)
	// Its events are posted asynchronously; they must land before the cold wake's count starts.
	time.Sleep(2 * time.Second)

	from := time.Now()
	if _, err := srs.Create(ctx, scaleRequest(ns, "cold", 1), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitAllReady(ns, 2, time.Minute)
	// Anything the wake still sends (events, a watch being closed) comes within a moment.
	time.Sleep(3 * time.Second)

	counts := map[string]int{}
	seen := map[string]bool{}
	for _, e := range auditLog(t, func(e auditEvent) bool {
		return e.User.Username == id.user && e.ObjectRef != nil && e.ObjectRef.Namespace == ns && !e.Received.Time.Before(from)
	}) {
		// A watch is logged when it starts and again when it ends: one request.
		if seen[e.AuditID] {
			continue
		}
		seen[e.AuditID] = true
		counts[auditVerbs[e.Verb]+" "+e.resource()]++
	}
	t.Logf("requests for one cold wake: %s", formatCounts(counts))
	for key, n := range counts {
		if budget, ok := coldWakeBudget[key]; !ok || n > budget {
			t.Errorf("%s: %d requests for one cold wake, budget %d", key, n, budget)
		}
	}
	if counts["PATCH deployments/scale"] != 1 {
		t.Errorf("the cold wake made %d scale writes, want 1", counts["PATCH deployments/scale"])
	}
}

func formatCounts(counts map[string]int) string {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, counts[k])
	}
	return strings.Join(parts, ", ")
}
