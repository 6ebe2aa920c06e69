package gate

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/zerowake/zerowake/wake"
)

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in   string
		want wake.Target
		err  bool
	}{
		{in: "shop/deployment/web", want: wake.Deployment("shop", "web")},
		{in: "shop/Deployment/web", want: wake.Deployment("shop", "web")},
		{in: "shop/web", want: wake.Deployment("shop", "web")},
		{in: "shop/sts/db:2", want: func() wake.Target { t := wake.StatefulSet("shop", "db"); t.MinReplicas = 2; return t }()},
		{in: "shop/rollout/api", want: wake.Rollout("shop", "api")},
		{in: "shop/Widget.v1.example.com/w", want: wake.Target{Namespace: "shop", APIVersion: "example.com/v1", Kind: "Widget", Name: "w"}},
		{in: "shop/widget/w", err: true},
		{in: "shop/Widget.v1/w", err: true},
		{in: "web", err: true},
		{in: "/deployment/web", err: true},
		{in: "shop/deployment/", err: true},
		{in: "a/b/c/d", err: true},
		{in: "shop/web:0", err: true},
		{in: "shop/web:1001", err: true},
		{in: "shop/web:x", err: true},
	}
	for _, tt := range tests {
		got, err := ParseTarget(tt.in)
		if (err != nil) != tt.err {
			t.Errorf("ParseTarget(%q) error = %v, want error %v", tt.in, err, tt.err)
			continue
		}
		if err == nil && got != tt.want {
			t.Errorf("ParseTarget(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestParseRouteTakesParametersFromOnePlaceOnly(t *testing.T) {
	d := RouteDefaults{Timeout: 30 * time.Second, MaxTimeout: time.Minute, MaxTargets: 2}
	query := url.Values{"target": {"shop/deployment/web,shop/sts/db"}, "timeout": {"10s"}, "page": {"true"}}
	header := http.Header{}
	header.Set(HeaderTarget, "evil/deployment/x")
	header.Set(HeaderTimeout, "1h")

	r, err := parseRoute(fromQuery, query, header, d)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Targets) != 2 || r.Targets[0] != wake.Deployment("shop", "web") || r.Targets[1] != wake.StatefulSet("shop", "db") {
		t.Errorf("query mode targets = %+v", r.Targets)
	}
	if r.Timeout != 10*time.Second || !r.Page {
		t.Errorf("query mode timeout %s page %v, want 10s true", r.Timeout, r.Page)
	}

	r, err = parseRoute(fromHeader, url.Values{"target": {"evil/deployment/y"}}, header, d)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Targets) != 1 || r.Targets[0] != wake.Deployment("evil", "x") {
		t.Errorf("header mode targets = %+v, want only the header's", r.Targets)
	}
	if r.Timeout != time.Minute {
		t.Errorf("timeout %s, want it capped at the gate's maximum 1m", r.Timeout)
	}
}

func TestParseRouteRefusesMalformedRoutes(t *testing.T) {
	d := RouteDefaults{Timeout: time.Second, MaxTargets: 2}
	for _, q := range []string{"", "target=", "target=web", "target=a/b,c/d,e/f", "target=a/b&timeout=-1s", "target=a/b&timeout=soon", "target=a/b&page=maybe"} {
		v, _ := url.ParseQuery(q)
		if _, err := parseRoute(fromQuery, v, http.Header{}, d); err == nil {
			t.Errorf("route %q was accepted", q)
		}
	}
}

func TestWantsPage(t *testing.T) {
	page := &Route{Page: true}
	tests := []struct {
		route          *Route
		method, accept string
		want           bool
	}{
		{page, "GET", "text/html,application/xhtml+xml,*/*;q=0.8", true},
		{page, "HEAD", "text/html", true},
		{page, "POST", "text/html", false},
		{page, "GET", "application/json", false},
		{page, "GET", "", false},
		{&Route{}, "GET", "text/html", false},
	}
	for _, tt := range tests {
		if got := wantsPage(tt.route, tt.method, tt.accept); got != tt.want {
			t.Errorf("wantsPage(page=%v, %s, %q) = %v, want %v", tt.route.Page, tt.method, tt.accept, got, tt.want)
		}
	}
}

func TestAllReady(t *testing.T) {
	ready, idle := wake.Status{Exists: true, Ready: true}, wake.Status{Exists: true}
	for _, tt := range []struct {
		in   []wake.Status
		want bool
	}{
		{[]wake.Status{ready}, true},
		{[]wake.Status{ready, ready}, true},
		{[]wake.Status{ready, idle}, false},
		{[]wake.Status{{}}, false},
		{nil, false},
	} {
		if got := allReady(tt.in); got != tt.want {
			t.Errorf("allReady(%+v) = %v", tt.in, got)
		}
	}
}

func TestOverCap(t *testing.T) {
	if overCap(9, 10) || !overCap(10, 10) || overCap(1<<20, -1) || overCap(5, 0) {
		t.Error("overCap: a cap of n admits n held calls; 0 or negative means no cap")
	}
}

func TestAnswerFor(t *testing.T) {
	target := wake.Deployment("shop", "web")
	route := &Route{Timeout: 30 * time.Second}
	failed := func(reason string) error {
		return fmt.Errorf("wrapped: %w", &wake.FailedError{Namespace: "shop", Name: "web", Condition: "Scaled", Reason: reason, Message: "m"})
	}
	tests := []struct {
		name              string
		err, route, calls error
		outcome           Outcome
		status            int
		retry             bool
		reason            string
		says              []string
	}{
		{name: "ready", outcome: OutcomeWoken, status: 200},
		{name: "not opted in", err: failed(ReasonNotOptedIn), outcome: OutcomeRefused, status: 403, reason: ReasonNotOptedIn,
			says: []string{"owner has not opted in", "kubectl label deployment web -n shop zerowake.dev/wake=true"}},
		{name: "above cap", err: failed(ReasonAboveOwnerCap), outcome: OutcomeRefused, status: 403, reason: ReasonAboveOwnerCap,
			says: []string{"zerowake.dev/max-replicas"}},
		{name: "kind not allowed", err: failed("KindNotAllowed"), outcome: OutcomeRefused, status: 403, reason: "KindNotAllowed"},
		{name: "ready timeout", err: failed("ReadyTimeout"), outcome: OutcomeFailed, status: 503, retry: true, reason: "ReadyTimeout"},
		{name: "target missing", err: failed("TargetNotFound"), outcome: OutcomeFailed, status: 503, retry: true, reason: "TargetNotFound"},
		{name: "route timeout", err: context.DeadlineExceeded, route: context.DeadlineExceeded, outcome: OutcomeTimeout, status: 503, retry: true,
			says: []string{"not ready within 30s"}},
		{name: "group member cut short", err: context.Canceled, route: context.Canceled, outcome: OutcomeTimeout, status: 503, retry: true},
		{name: "proxy hung up", err: context.Canceled, route: context.Canceled, calls: context.Canceled, outcome: OutcomeCanceled},
		{name: "gate stopping", err: wake.ErrStopped, outcome: OutcomeUnavailable, status: 503, retry: true},
		{name: "namespace not served", err: wake.ErrNamespaceNotWatched, outcome: OutcomeBadRoute, status: 400},
		{name: "write refused", err: errors.New("scalerequests is forbidden"), outcome: OutcomeFailed, status: 503, retry: true, says: []string{"could not signal"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := answerFor(target, tt.err, tt.route, tt.calls, route, 5*time.Second)
			if a.Outcome != tt.outcome {
				t.Fatalf("outcome %s, want %s (%+v)", a.Outcome, tt.outcome, a)
			}
			if tt.status != 0 && a.Status() != tt.status {
				t.Errorf("status %d, want %d", a.Status(), tt.status)
			}
			if (a.RetryAfter > 0) != tt.retry {
				t.Errorf("retry after %s, want one: %v", a.RetryAfter, tt.retry)
			}
			if tt.reason != "" && a.Reason != tt.reason {
				t.Errorf("reason %q, want %q", a.Reason, tt.reason)
			}
			for _, s := range tt.says {
				if !strings.Contains(a.Message, s) {
					t.Errorf("message %q does not say %q", a.Message, s)
				}
			}
		})
	}
}

func TestWorstExplainsTheGroup(t *testing.T) {
	timeout, refused, failed, woken := Answer{Outcome: OutcomeTimeout}, Answer{Outcome: OutcomeRefused}, Answer{Outcome: OutcomeFailed}, Answer{Outcome: OutcomeWoken}
	if got := worst([]Answer{woken, woken}); got.Outcome != OutcomeWoken {
		t.Errorf("all woken: %s", got.Outcome)
	}
	if got := worst([]Answer{woken, timeout}); got.Outcome != OutcomeTimeout {
		t.Errorf("one not ready: %s", got.Outcome)
	}
	if got := worst([]Answer{timeout, failed, woken}); got.Outcome != OutcomeFailed {
		t.Errorf("a failure cut the others short: %s", got.Outcome)
	}
	if got := worst([]Answer{failed, refused}); got.Outcome != OutcomeRefused {
		t.Errorf("a refusal: %s", got.Outcome)
	}
}
