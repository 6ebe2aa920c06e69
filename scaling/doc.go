// Package scaling raises workloads to a minimum replica count through their /scale subresource
// and watches single workloads until they are ready. It also lowers an idle workload to zero
// (ScaleToZero), with a write the API server refuses if the workload changed since it was read.
//
// It knows targets and the scale subresource only: any kind that serves /scale (Deployment,
// StatefulSet, Argo Rollout, ...) works, and nothing here knows why a target is being woken.
// Callers turn a Result or a typed *Error into whatever status they keep.
//
// # Errors
//
// Every failure of ScaleHandler is an *Error; ReasonOf reads its Reason. "Final" below means
// that retrying the same call cannot succeed until something outside changes (the request's
// target reference, or the cluster: a CRD installed, RBAC granted, a policy relaxed).
//
//   - InvalidTarget: the reference is malformed. Final: only a new reference fixes it.
//   - KindUnknown: the API server serves no such kind, after discovery was refreshed. Final
//     until a CRD is installed; re-check now and then. A resource that disappears under a
//     cached resolution (a CRD version removed) is resolved again within the same call, so
//     KindUnknown means no version of the kind is served any more.
//   - NoScaleSubresource: discovery answered, and none of the kind's served versions lists a
//     scale subresource. Final. Discovery that failed to answer is Transient, never this.
//   - TargetNotFound: the kind serves /scale but the object does not exist. Final until it is
//     created; re-check now and then.
//   - Forbidden: the API server's authorizer (RBAC) refused the /scale read or write. Final
//     until RBAC changes; re-check now and then (a just-restarted API server answers this for
//     a moment too).
//   - Rejected: the API server refused the request on its merits: a validation error (400,
//     422) or a denial by an admission webhook or a ValidatingAdmissionPolicy, whatever code
//     it chose (400, 403, 422, ...). Err carries the API's status and message, for the user.
//     Final until the policy, webhook or target changes; re-check now and then. Denials are
//     recognised by the prefix the API server gives them; the API has no structured field for
//     it, so a 403 from another admission plugin would read as Forbidden (no built-in one
//     refuses a /scale update).
//   - Conflict: the target changed between read and write. Retry at once.
//   - Transient: anything else (timeouts, 5xx, throttling, discovery not answering). Retry
//     with backoff.
//
// A from-zero scale is one JSON patch whose test operation requires an empty Scale spec. Only
// that operation's failure, as the API server sends it (422 Invalid, the generic message "the
// server rejected our request due to an error in our request", details naming nothing), means
// "not at zero" and leads to a read and a resourceVersion-guarded write.
//
// # Readiness
//
// StateOf reads a TargetState from any kind; ReadyFor(min) is true when spec.replicas and the
// ready count are both at least min and the count is current. The ready count is
// status.readyReplicas (for Deployment, StatefulSet, ReplicaSet, ReplicationController and Argo
// Rollout an absent field is 0, as they omit a zero); else status.availableReplicas if the
// status has it; else status.replicas, the count a /scale subresource conventionally reports,
// for kinds that publish no readiness count. The count is current when status.observedGeneration
// (an integer, or a string holding one as Argo Rollouts write it) is at least
// metadata.generation, or when the kind publishes no comparable observedGeneration.
package scaling
