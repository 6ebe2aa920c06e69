package wake

import (
	"errors"
	"fmt"
	"strings"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
)

// Target names the workload to wake. Its ScaleRequest is named Name, in Namespace.
type Target struct {
	// Namespace of the workload (and of its ScaleRequest). Empty means Options.Namespace.
	Namespace string
	// APIVersion of the workload, like "apps/v1".
	APIVersion string
	// Kind of the workload, like "Deployment".
	Kind string
	// Name of the workload.
	Name string
	// MinReplicas is how far to scale up; 0 means 1. At most v1alpha1.MaxMinReplicas.
	MinReplicas int32
}

// Well-known API versions of scalable kinds.
const (
	AppsV1           = "apps/v1"
	ArgoRolloutsV1a1 = "argoproj.io/v1alpha1"
)

// Deployment returns the Target for an apps/v1 Deployment.
func Deployment(namespace, name string) Target {
	return Target{Namespace: namespace, APIVersion: AppsV1, Kind: "Deployment", Name: name}
}

// StatefulSet returns the Target for an apps/v1 StatefulSet.
func StatefulSet(namespace, name string) Target {
	return Target{Namespace: namespace, APIVersion: AppsV1, Kind: "StatefulSet", Name: name}
}

// Rollout returns the Target for an Argo Rollout (argoproj.io/v1alpha1).
func Rollout(namespace, name string) Target {
	return Target{Namespace: namespace, APIVersion: ArgoRolloutsV1a1, Kind: "Rollout", Name: name}
}

// Ref is the target as a ScaleRequest's spec.scaleTargetRef.
func (t Target) Ref() v1alpha1.CrossVersionObjectReference {
	return v1alpha1.CrossVersionObjectReference{APIVersion: t.APIVersion, Kind: t.Kind, Name: t.Name}
}

// String is "namespace/Kind/name" (with the group when it has one: "namespace/Kind.group/name").
func (t Target) String() string {
	kind := t.Kind
	if g := groupOf(t.APIVersion); g != "" {
		kind += "." + g
	}
	return t.Namespace + "/" + kind + "/" + t.Name
}

// ErrInvalidTarget is wrapped by the errors Wake and WaitReady return for a malformed Target.
var ErrInvalidTarget = errors.New("wake: invalid target")

// validate checks what Wake needs without allocating on success. The API server validates the
// rest (name syntax, apiVersion pattern).
func (t *Target) validate() error {
	switch {
	case t.Name == "":
		return fmt.Errorf("%w: empty name", ErrInvalidTarget)
	case t.Kind == "":
		return fmt.Errorf("%w: empty kind", ErrInvalidTarget)
	case t.APIVersion == "":
		return fmt.Errorf("%w: empty apiVersion", ErrInvalidTarget)
	case t.MinReplicas < 0 || t.MinReplicas > v1alpha1.MaxMinReplicas:
		return fmt.Errorf("%w: minReplicas %d is outside 1..%d", ErrInvalidTarget, t.MinReplicas, v1alpha1.MaxMinReplicas)
	}
	return nil
}

func (t *Target) minReplicas() int32 {
	if t.MinReplicas <= 0 {
		return 1
	}
	return t.MinReplicas
}

// groupOf returns the group of an apiVersion ("" for the core group).
func groupOf(apiVersion string) string {
	if i := strings.IndexByte(apiVersion, '/'); i >= 0 {
		return apiVersion[:i]
	}
	return ""
}

// sameTarget reports whether a ScaleRequest's scaleTargetRef names the target. The version is
// not compared: apps/v1 and apps/v1beta2 Deployments are the same objects.
func sameTarget(ref *v1alpha1.CrossVersionObjectReference, t *Target) bool {
	return ref.Name == t.Name && ref.Kind == t.Kind && groupOf(ref.APIVersion) == groupOf(t.APIVersion)
}

// MismatchError is returned when the ScaleRequest named after a target already exists for a
// different workload (e.g. a StatefulSet and a Deployment sharing a name). The client never
// rewrites another workload's request.
type MismatchError struct {
	Namespace, Name string
	// Existing is the scaleTargetRef of the ScaleRequest that exists.
	Existing v1alpha1.CrossVersionObjectReference
	// Wanted is the target that was asked for.
	Wanted v1alpha1.CrossVersionObjectReference
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("scalerequest %s/%s targets %s %s/%s, not %s %s/%s",
		e.Namespace, e.Name, e.Existing.APIVersion, e.Existing.Kind, e.Existing.Name,
		e.Wanted.APIVersion, e.Wanted.Kind, e.Wanted.Name)
}
