package scaling

import (
	"testing"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
)

func FuzzTargetGroupKind(f *testing.F) {
	f.Add("apps/v1", "Deployment", "web")
	f.Add("v1", "ReplicationController", "x")
	f.Add("argoproj.io/v1alpha1", "Rollout", "r")
	f.Add("/v1", "K", "n")
	f.Add("a/b/c", "", "")
	f.Fuzz(func(t *testing.T, apiVersion, kind, name string) {
		target := Target{Namespace: "ns", Ref: autoscalingv1.CrossVersionObjectReference{APIVersion: apiVersion, Kind: kind, Name: name}}
		gk, err := target.GroupKind()
		if err != nil {
			return
		}
		if gk.Kind != kind || kind == "" || name == "" {
			t.Fatalf("accepted %q %q %q as %v", apiVersion, kind, name, gk)
		}
	})
}
