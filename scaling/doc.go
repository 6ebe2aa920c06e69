// Package scaling raises workloads to a minimum replica count through their /scale subresource
// and watches single workloads until they are ready.
//
// It knows targets and the scale subresource only: any kind that serves /scale (Deployment,
// StatefulSet, Argo Rollout, ...) works, and nothing here knows why a target is being woken.
// Callers turn a Result or a typed *Error into whatever status they keep.
package scaling
