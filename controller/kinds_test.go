package controller

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestParseAllowedKinds(t *testing.T) {
	set, err := ParseAllowedKinds(" Deployment.apps, StatefulSet.apps,,Rollout.argoproj.io,ReplicationController ")
	if err != nil {
		t.Fatal(err)
	}
	for _, gk := range []schema.GroupKind{
		{Group: "apps", Kind: "Deployment"}, {Group: "apps", Kind: "StatefulSet"},
		{Group: "argoproj.io", Kind: "Rollout"}, {Kind: "ReplicationController"},
	} {
		if !set.Allows(gk) {
			t.Errorf("%v not allowed", gk)
		}
	}
	if set.Allows(schema.GroupKind{Group: "apps", Kind: "ReplicaSet"}) || set.Allows(schema.GroupKind{Kind: "Deployment"}) {
		t.Error("allowed a kind not listed (the group is part of the kind)")
	}
	if got := set.String(); got != "Deployment.apps,ReplicationController,Rollout.argoproj.io,StatefulSet.apps" {
		t.Errorf("String() = %q", got)
	}
	all, err := ParseAllowedKinds("*")
	if err != nil || !all.Allows(schema.GroupKind{Group: "x.io", Kind: "Anything"}) {
		t.Errorf("* must allow every kind: %v", err)
	}
	for _, bad := range []string{"", " , ", "deployment.apps", "Deployment.Apps", "Deploy ment", "Deployment.apps_x", "Dep/loyment"} {
		if _, err := ParseAllowedKinds(bad); err == nil {
			t.Errorf("ParseAllowedKinds(%q) accepted", bad)
		} else if !strings.Contains(err.Error(), "kind") {
			t.Errorf("ParseAllowedKinds(%q): unclear message %q", bad, err)
		}
	}
}

func FuzzParseAllowedKinds(f *testing.F) {
	for _, seed := range []string{DefaultAllowedKinds, "*", "Rollout.argoproj.io", "A.b.c,,D", "é.apps", "Deployment."} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		set, err := ParseAllowedKinds(s)
		if err != nil {
			return
		}
		// What parses must render to a list that parses to the same set.
		again, err := ParseAllowedKinds(set.String())
		if err != nil {
			t.Fatalf("String() of a parsed set does not parse: %q: %v", set.String(), err)
		}
		if again.String() != set.String() {
			t.Fatalf("round trip changed the set: %q -> %q", set.String(), again.String())
		}
	})
}
