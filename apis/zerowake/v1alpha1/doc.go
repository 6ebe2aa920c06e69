// Package v1alpha1 is the v1alpha1 version of the zerowake.dev API: the ScaleRequest, which a
// resolver writes to ask that an idle workload be scaled up from zero.
//
// +k8s:deepcopy-gen=package
// +groupName=zerowake.dev
// +kubebuilder:object:generate=true
package v1alpha1
