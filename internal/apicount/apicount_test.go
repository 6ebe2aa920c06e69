package apicount

import "testing"

func TestResourceOf(t *testing.T) {
	for path, want := range map[string]string{
		"/apis/apps/v1/namespaces/shop/deployments/web/scale":                     "deployments/scale",
		"/apis/zerowake.dev/v1alpha1/namespaces/shop/scalerequests/web/status":    "scalerequests/status",
		"/apis/zerowake.dev/v1alpha1/scalerequests":                               "scalerequests",
		"/apis/coordination.k8s.io/v1/namespaces/zerowake-system/leases/zerowake": "leases",
		"/api/v1/namespaces/shop/events":                                          "events",
		"/api/v1/namespaces/shop":                                                 "namespaces",
		"/apis":                                                                   "",
		"/api/v1":                                                                 "",
		"/healthz":                                                                "",
	} {
		if got := ResourceOf(path); got != want {
			t.Errorf("ResourceOf(%q) = %q, want %q", path, got, want)
		}
	}
}
