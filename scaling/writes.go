package scaling

import (
	"context"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"
)

// FieldManager names the controller's writes in the API server's managed fields: its status
// writes, and its /scale writes that raise a target from zero. The API server records, in the
// target's metadata.managedFields, which manager last set spec.replicas through /scale; a
// manager loses that entry once someone else changes the field. (Kubernetes v1.37 leaves the
// entry's time unset for writes through /scale, so when is not recorded.)
const FieldManager = "zerowake-controller"

// raiseFieldManager names the /scale writes that raise a target from a count above zero, so
// that the managed fields tell a write from zero apart from the others.
const raiseFieldManager = FieldManager + "-raise"

// sleepFieldManager names the /scale writes that put an idle target to sleep: LastWrite does
// not take them for writes that raised the target.
const sleepFieldManager = FieldManager + "-sleep"

// Write is what the target itself records of the controller's last /scale write to it.
type Write struct {
	// At is when the write was made, to the second (truncated) by the API server's clock, if
	// the API server recorded it (zero otherwise: v1.37 records no time for /scale writes).
	At time.Time
	// FromZero is set when the write raised the target from zero replicas (the from-zero
	// patch, which applies only to a target at zero).
	FromZero bool
}

// WithWriteRecords lets LastWrite read targets' metadata through md. Without it, LastWrite
// finds nothing.
func (h *ScaleHandler) WithWriteRecords(md metadata.Interface) *ScaleHandler {
	h.records = md
	return h
}

// LastWrite returns the controller's last /scale write to the target, if the target still
// records it: the controller's field manager still owns spec.replicas through /scale, so no
// one has changed the replicas since. It costs one LIST of the one object's metadata (the
// controller may list the kinds it wakes, not get them), and is meant for the rare path where
// a target is found up and the controller does not know why, such as after a predecessor
// crashed between its scale write and the status write recording it.
func (h *ScaleHandler) LastWrite(ctx context.Context, target Target, resource schema.GroupVersionResource) (Write, bool, error) {
	if h.records == nil {
		return Write{}, false, nil
	}
	list, err := h.records.Resource(resource).Namespace(target.Namespace).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", target.Ref.Name).String(),
	})
	if err != nil {
		return Write{}, false, h.classify(target, resource, err)
	}
	var last Write
	found := false
	for _, item := range list.Items {
		if item.Name != target.Ref.Name {
			continue
		}
		for _, entry := range item.ManagedFields {
			if entry.Subresource != "scale" || entry.Operation != metav1.ManagedFieldsOperationUpdate ||
				entry.FieldsV1 == nil || !strings.Contains(entry.FieldsV1.GetRawString(), `"f:replicas"`) {
				continue
			}
			if entry.Manager != FieldManager && entry.Manager != raiseFieldManager {
				continue
			}
			var at time.Time
			if entry.Time != nil {
				at = entry.Time.Time
			}
			if !found || at.After(last.At) {
				last, found = Write{At: at, FromZero: entry.Manager == FieldManager}, true
			}
		}
	}
	return last, found, nil
}
