package scaling

import (
	"fmt"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Target names a workload: a reference resolved in Namespace.
type Target struct {
	Namespace string
	Ref       autoscalingv1.CrossVersionObjectReference
}

// GroupKind parses the reference's apiVersion and returns its group and kind.
func (t Target) GroupKind() (schema.GroupKind, error) {
	gv, err := schema.ParseGroupVersion(t.Ref.APIVersion)
	if err != nil {
		return schema.GroupKind{}, err
	}
	if gv.Version == "" {
		return schema.GroupKind{}, fmt.Errorf("apiVersion %q has no version", t.Ref.APIVersion)
	}
	if t.Ref.Kind == "" || t.Ref.Name == "" {
		return schema.GroupKind{}, fmt.Errorf("kind and name must not be empty")
	}
	return schema.GroupKind{Group: gv.Group, Kind: t.Ref.Kind}, nil
}

// String is "namespace/Kind/name" for logs and messages.
func (t Target) String() string {
	return t.Namespace + "/" + t.Ref.Kind + "/" + t.Ref.Name
}
