package controller

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
)

// DefaultAllowedKinds is the --allowed-kinds default: the built-in workloads with /scale.
const DefaultAllowedKinds = "Deployment.apps,StatefulSet.apps"

// KindSet is the set of kinds the controller may scale. The zero value allows nothing.
type KindSet struct {
	all   bool
	kinds map[schema.GroupKind]struct{}
}

var (
	kindName    = regexp.MustCompile(`^[A-Z][A-Za-z0-9]*$`)
	versionName = regexp.MustCompile(`^v[0-9]+((alpha|beta)[0-9]+)?$`)
)

// ParseAllowedKinds parses a comma-separated list of Kind.group entries (the kubectl notation:
// "Deployment.apps", "Rollout.argoproj.io"; a core kind has no group: "ReplicationController"),
// or "*" for every kind. Blank entries are ignored.
func ParseAllowedKinds(s string) (KindSet, error) {
	set := KindSet{kinds: map[schema.GroupKind]struct{}{}}
	for _, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		switch {
		case entry == "":
			continue
		case entry == "*":
			set.all = true
			continue
		}
		kind, group, _ := strings.Cut(entry, ".")
		if !kindName.MatchString(kind) || len(kind) > 63 {
			return KindSet{}, fmt.Errorf("allowed kind %q: %q is not a Kind in CamelCase (like Deployment.apps)", entry, kind)
		}
		// Kind.version.group (kubectl's fully qualified form) would parse as a group named
		// "v1.apps" that no kind belongs to, and so silently never match.
		if first, rest, _ := strings.Cut(group, "."); versionName.MatchString(first) {
			return KindSet{}, fmt.Errorf("allowed kind %q names a version: write Kind.group without it, like %s", entry, strings.TrimSuffix(kind+"."+rest, "."))
		}
		if strings.Contains(entry, "/") {
			return KindSet{}, fmt.Errorf("allowed kind %q: write Kind.group, like Deployment.apps (not an apiVersion)", entry)
		}
		if group != "" {
			if errs := validation.IsDNS1123Subdomain(group); len(errs) > 0 {
				return KindSet{}, fmt.Errorf("allowed kind %q: group %q: %s", entry, group, strings.Join(errs, "; "))
			}
		}
		set.kinds[schema.GroupKind{Group: group, Kind: kind}] = struct{}{}
	}
	if !set.all && len(set.kinds) == 0 {
		return KindSet{}, fmt.Errorf("allowed kinds %q names no kind; use \"*\" to allow every kind", s)
	}
	return set, nil
}

// Allows reports whether gk may be scaled.
func (s KindSet) Allows(gk schema.GroupKind) bool {
	if s.all {
		return true
	}
	_, ok := s.kinds[gk]
	return ok
}

// String renders the set in ParseAllowedKinds notation, sorted.
func (s KindSet) String() string {
	entries := make([]string, 0, len(s.kinds)+1)
	if s.all {
		entries = append(entries, "*")
	}
	for gk := range s.kinds {
		entry := gk.Kind
		if gk.Group != "" {
			entry += "." + gk.Group
		}
		entries = append(entries, entry)
	}
	sort.Strings(entries)
	return strings.Join(entries, ",")
}
