package scaling

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	metadatafake "k8s.io/client-go/metadata/fake"
	"k8s.io/klog/v2/ktesting"
)

// managedEntry is a managed-fields entry as the API server records a write.
func managedEntry(manager, subresource, fields string, at time.Time) metav1.ManagedFieldsEntry {
	return metav1.ManagedFieldsEntry{Manager: manager, Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "apps/v1",
		Time: &metav1.Time{Time: at}, FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(fields), Subresource: subresource}
}

func TestLastWriteReadsTheTargetsRecord(t *testing.T) {
	at := time.Date(2026, 12, 5, 10, 0, 7, 0, time.UTC)
	replicas := `{"f:spec":{"f:replicas":{}}}`
	for _, tc := range []struct {
		name    string
		entries []metav1.ManagedFieldsEntry
		want    Write
		found   bool
	}{
		{"from zero", []metav1.ManagedFieldsEntry{
			managedEntry("kubectl", "", `{"f:spec":{"f:template":{}}}`, at.Add(-time.Hour)),
			managedEntry(FieldManager, "scale", replicas, at)}, Write{At: at, FromZero: true}, true},
		{"a raise", []metav1.ManagedFieldsEntry{managedEntry(raiseFieldManager, "scale", replicas, at)}, Write{At: at}, true},
		{"the later of both", []metav1.ManagedFieldsEntry{
			managedEntry(FieldManager, "scale", replicas, at.Add(-time.Minute)),
			managedEntry(raiseFieldManager, "scale", replicas, at)}, Write{At: at}, true},
		{"someone else's scale", []metav1.ManagedFieldsEntry{managedEntry("kube-controller-manager", "scale", replicas, at)}, Write{}, false},
		{"not through /scale", []metav1.ManagedFieldsEntry{managedEntry(FieldManager, "", replicas, at)}, Write{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			scheme := runtime.NewScheme()
			if err := metav1.AddMetaToScheme(scheme); err != nil {
				t.Fatal(err)
			}
			obj := &metav1.PartialObjectMetadata{
				TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
				ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", ManagedFields: tc.entries},
			}
			other := obj.DeepCopy()
			other.Name, other.ManagedFields = "api", []metav1.ManagedFieldsEntry{managedEntry(FieldManager, "scale", replicas, at.Add(time.Hour))}
			f := newHandlerFixture(1)
			f.handler.WithWriteRecords(metadatafake.NewSimpleMetadataClient(scheme, obj, other))
			got, found, err := f.handler.LastWrite(ctx, webDeployment(), deploymentsV1)
			if err != nil || found != tc.found || got != tc.want {
				t.Fatalf("LastWrite = %+v, %v, %v; want %+v, %v", got, found, err, tc.want, tc.found)
			}
		})
	}
}
