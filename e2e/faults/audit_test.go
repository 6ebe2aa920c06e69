package faults

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// auditEvent is the part of an audit.k8s.io/v1 Event the tests read.
type auditEvent struct {
	AuditID    string `json:"auditID"`
	Stage      string `json:"stage"`
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
		APIGroup    string `json:"apiGroup"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	RequestObject json.RawMessage  `json:"requestObject"`
	Received      metav1.MicroTime `json:"requestReceivedTimestamp"`
	Completed     metav1.MicroTime `json:"stageTimestamp"`
}

func (e auditEvent) String() string {
	ref := ""
	if e.ObjectRef != nil {
		ref = e.ObjectRef.Resource
		if e.ObjectRef.Subresource != "" {
			ref += "/" + e.ObjectRef.Subresource
		}
		ref += " " + e.ObjectRef.Namespace + "/" + e.ObjectRef.Name
	}
	return fmt.Sprintf("%s %s %s %s -> %d [%s .. %s]", e.User.Username, e.Verb, ref, e.Stage, e.code(),
		e.Received.Format("15:04:05.000000"), e.Completed.Format("15:04:05.000000"))
}

func (e auditEvent) code() int {
	if e.ResponseStatus == nil {
		return 0
	}
	return e.ResponseStatus.Code
}

func (e auditEvent) resource() string {
	if e.ObjectRef == nil {
		return ""
	}
	if e.ObjectRef.Subresource != "" {
		return e.ObjectRef.Resource + "/" + e.ObjectRef.Subresource
	}
	return e.ObjectRef.Resource
}

// isWrite reports whether the request could change something.
func (e auditEvent) isWrite() bool {
	switch e.Verb {
	case "create", "update", "patch", "delete", "deletecollection":
		return true
	}
	return false
}

// succeeded reports whether the request completed with a 2xx.
func (e auditEvent) succeeded() bool {
	return e.Stage == "ResponseComplete" && e.code() >= 200 && e.code() < 300
}

// workWrite reports whether e is a write that acts on the controller's work: a target's /scale
// or a ScaleRequest's status. Lease writes (the election itself) are not, and neither are
// events, which the controller posts asynchronously and which change nothing.
func (e auditEvent) workWrite() bool {
	if !e.isWrite() || e.Stage != "ResponseComplete" {
		return false
	}
	switch e.resource() {
	case "scalerequests/status", "deployments/scale", "statefulsets/scale", "widgets/scale":
		return true
	}
	return false
}

// auditLog reads the completed requests in the apiserver's audit log that match keep.
func auditLog(t *testing.T, keep func(auditEvent) bool) []auditEvent {
	t.Helper()
	path := cluster.AuditLog()
	file, err := os.Open(path)
	if err != nil {
		t.Fatalf("audit log: %v", err)
	}
	defer file.Close()
	var out []auditEvent
	scanner := bufio.NewScanner(file)
	scanner.Buffer(make([]byte, 1<<20), 16<<20)
	for scanner.Scan() {
		var e auditEvent
		if err := json.Unmarshal(scanner.Bytes(), &e); err != nil {
			t.Fatalf("audit log %s: %v", path, err)
		}
		if keep(e) {
			out = append(out, e)
		}
	}
	if err := scanner.Err(); err != nil {
		t.Fatalf("audit log %s: %v", path, err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Received.Before(&out[j].Received) })
	return out
}

// byUser keeps the completed requests of user.
func byUser(user string) func(auditEvent) bool {
	return func(e auditEvent) bool { return e.User.Username == user && e.Stage == "ResponseComplete" }
}

// span is the time from the first request received to the last one completed.
type span struct {
	n           int
	first, last time.Time
}

func (s span) String() string {
	if s.n == 0 {
		return "no writes"
	}
	return fmt.Sprintf("%d writes from %s to %s", s.n, s.first.Format("15:04:05.000000"), s.last.Format("15:04:05.000000"))
}

func spanOf(events []auditEvent) span {
	var s span
	for _, e := range events {
		if s.n == 0 || e.Received.Time.Before(s.first) {
			s.first = e.Received.Time
		}
		if e.Completed.Time.After(s.last) {
			s.last = e.Completed.Time
		}
		s.n++
	}
	return s
}

// leaseHolder returns the holderIdentity a lease write set, and whether e is a lease write.
func leaseHolder(e auditEvent) (holder string, ok bool) {
	if e.resource() != "leases" || !e.isWrite() || len(e.RequestObject) == 0 {
		return "", false
	}
	var lease struct {
		Spec struct {
			HolderIdentity *string `json:"holderIdentity"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(e.RequestObject, &lease); err != nil {
		return "", false
	}
	if lease.Spec.HolderIdentity == nil {
		return "", true
	}
	return *lease.Spec.HolderIdentity, true
}

// leaseRenewSecond returns the renew time a lease write carried, in whole seconds: the
// resolution at which leader-election candidates compare lease records.
func leaseRenewSecond(e auditEvent) int64 {
	var lease struct {
		Spec struct {
			RenewTime *metav1.MicroTime `json:"renewTime"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(e.RequestObject, &lease); err != nil || lease.Spec.RenewTime == nil {
		return 0
	}
	return lease.Spec.RenewTime.Unix()
}

// summarize lists requests for a failure message.
func summarize(events []auditEvent, n int) string {
	var b strings.Builder
	for i, e := range events {
		if i == n {
			fmt.Fprintf(&b, "\n  ... %d more", len(events)-n)
			break
		}
		fmt.Fprintf(&b, "\n  %s", e)
	}
	return b.String()
}
