package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=sr,categories=zerowake
// +kubebuilder:printcolumn:name="Kind",type=string,JSONPath=`.spec.scaleTargetRef.kind`,description="Kind of the target workload"
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.scaleTargetRef.name`,description="Name of the target workload"
// +kubebuilder:printcolumn:name="Min",type=integer,JSONPath=`.spec.minReplicas`,description="Replicas the target is scaled up to"
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.status.replicas`,description="Target replicas after the latest scale"
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyReplicas`,description="Ready replicas of the target"
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`,description="Pending, Scaling, Ready, Idle, Draining, Asleep or Failed"
// +kubebuilder:printcolumn:name="Last-Activity",type=date,priority=1,JSONPath=`.status.lastActivity`,description="Last recorded activity of a target that sleeps when idle"
// +kubebuilder:printcolumn:name="Cold-Start",type=string,JSONPath=`.status.coldStartDuration`,description="Time from the latest signal to the target being ready"
// +kubebuilder:printcolumn:name="Reason",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,description="Reason of the Ready condition"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// ScaleRequest asks that a workload be scaled up from zero to at least spec.minReplicas.
// A resolver creates it (conventionally named after the target, in the target's namespace) when
// a request arrives for an idle workload, and bumps spec.requestedAt to signal demand again.
// The controller scales the target through its /scale subresource, never lowers replicas that
// something else has set (it scales a target to zero only when its owner asked for it with the
// zerowake.dev/idle-after annotation, and it was idle that long), and reports progress in status.
type ScaleRequest struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says which workload to wake and how far.
	// +required
	Spec ScaleRequestSpec `json:"spec"`

	// status is what the controller observed and did for the latest signal. A new request
	// reads as phase Pending until the controller has acted on it.
	// +kubebuilder:default={phase: Pending}
	// +optional
	Status ScaleRequestStatus `json:"status,omitempty"`
}

// MaxMinReplicas caps spec.minReplicas: waking from zero needs a few replicas, not a fleet.
const MaxMinReplicas = 1000

// ScaleRequestSpec is the demand signal.
type ScaleRequestSpec struct {
	// scaleTargetRef names the workload to scale: any kind with a /scale subresource
	// (Deployment, StatefulSet, Argo Rollout, ...) in the ScaleRequest's own namespace. It is
	// immutable: a ScaleRequest stands for one workload; wake another with another request.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="scaleTargetRef is immutable: a ScaleRequest stands for one workload; delete it and create a new one to wake another"
	// +required
	ScaleTargetRef CrossVersionObjectReference `json:"scaleTargetRef"`

	// minReplicas is the replica count the target is raised to when it is below it.
	// The controller never lowers replicas, but to put an idle target to sleep when its owner
	// asked for it (annotation zerowake.dev/idle-after).
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	MinReplicas int32 `json:"minReplicas,omitempty"`

	// requestedAt is when demand was last signalled. A resolver bumps it to signal again; the
	// cold-start duration is measured from it (from creation when it is unset), within what the
	// controller itself observed: a requestedAt later than the controller first saw the signal
	// counts as that moment, and one more than 5s before it as 5s before it.
	// +optional
	RequestedAt *metav1.MicroTime `json:"requestedAt,omitempty"`
}

// CrossVersionObjectReference identifies a workload in the ScaleRequest's namespace.
// +kubebuilder:validation:XValidation:rule="self.apiVersion.matches('^(([a-z0-9]([-a-z0-9]*[a-z0-9])?)(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?v[1-9][0-9]*((alpha|beta)[1-9][0-9]*)?$')",message="apiVersion must be a version like 'v1' or a group/version like 'apps/v1'",fieldPath=".apiVersion"
// +kubebuilder:validation:XValidation:rule="self.kind.matches('^[A-Z][A-Za-z0-9]*$')",message="kind must be a Kubernetes kind in CamelCase, like 'Deployment'",fieldPath=".kind"
// +kubebuilder:validation:XValidation:rule="self.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="name must be a lowercase DNS subdomain name, like 'web'",fieldPath=".name"
type CrossVersionObjectReference struct {
	// apiVersion is the API version of the target, like "apps/v1".
	// +kubebuilder:validation:MinLength=2
	// +kubebuilder:validation:MaxLength=317
	// +required
	APIVersion string `json:"apiVersion"`

	// kind is the kind of the target, like "Deployment".
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +required
	Kind string `json:"kind"`

	// name is the name of the target in the ScaleRequest's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	Name string `json:"name"`
}

// ScaleRequestPhase summarises where the latest signal stands.
// +kubebuilder:validation:Enum=Pending;Scaling;Ready;Idle;Draining;Asleep;Failed
type ScaleRequestPhase string

const (
	// PhasePending: the signal is seen but the target is not scaled yet (e.g. waiting out the rescale window).
	PhasePending ScaleRequestPhase = "Pending"
	// PhaseScaling: the target has at least minReplicas but fewer of them are ready: it is
	// waking, or it lost ready replicas after it was Ready (reason TargetNotReady).
	PhaseScaling ScaleRequestPhase = "Scaling"
	// PhaseReady: the target has at least minReplicas ready replicas now.
	PhaseReady ScaleRequestPhase = "Ready"
	// PhaseIdle: the latest signal was served, and the target has since been set below
	// minReplicas by something else (an idler, a GitOps revert); a new signal wakes it again.
	PhaseIdle ScaleRequestPhase = "Idle"
	// PhaseFailed: the signal cannot be served; the conditions say why.
	PhaseFailed ScaleRequestPhase = "Failed"
	// PhaseDraining: the target's owner asked for it to sleep when idle (annotation
	// zerowake.dev/idle-after), it has been idle that long, and the controller is about to
	// scale it to zero: resolvers no longer let requests through, and a new signal cancels it.
	PhaseDraining ScaleRequestPhase = "Draining"
	// PhaseAsleep: the controller scaled the idle target to zero; a new signal wakes it.
	PhaseAsleep ScaleRequestPhase = "Asleep"
)

// Condition types a ScaleRequest reports.
const (
	// ConditionScaled is True once the target has at least minReplicas for the latest signal.
	ConditionScaled = "Scaled"
	// ConditionReady is True once the target has at least minReplicas ready replicas.
	ConditionReady = "Ready"
	// ConditionSleep reports the sleep of a target whose owner asked for it (annotation
	// zerowake.dev/idle-after): True while Draining or Asleep, False with the reason the latest
	// sleep did not happen or will not (SleepAborted, SleepOverridden, InvalidIdleAfter).
	ConditionSleep = "Sleep"
)

// ScaleRequestStatus is what the controller observed and did.
type ScaleRequestStatus struct {
	// observedGeneration is the metadata.generation the controller last acted on; when it equals
	// metadata.generation, the latest signal has been seen.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// phase summarises the conditions: Pending, Scaling, Ready, Idle or Failed.
	// +optional
	Phase ScaleRequestPhase `json:"phase,omitempty"`

	// previousReplicas is the target's replica count before the latest scale.
	// +optional
	PreviousReplicas *int32 `json:"previousReplicas,omitempty"`

	// replicas is the target's replica count after the latest scale, as the controller last saw it.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// readyReplicas is the target's ready replica count as the controller last saw it.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// lastScaleTime is when the controller last wrote the target's replica count.
	// +optional
	LastScaleTime *metav1.Time `json:"lastScaleTime,omitempty"`

	// readyTime is when the controller first saw the target ready for the latest signal (also
	// when the status write saying so was made later).
	// +optional
	ReadyTime *metav1.Time `json:"readyTime,omitempty"`

	// coldStartDuration is the time from the latest signal (spec.requestedAt, or creation,
	// bounded by the controller's own first sight of the signal) to readyTime. It is recorded
	// only when the controller scaled the target up for the signal.
	// +optional
	ColdStartDuration *metav1.Duration `json:"coldStartDuration,omitempty"`

	// lastActivity is the latest activity recorded for the target (its activity Lease's
	// renewTime), shown for targets that sleep when idle.
	// +optional
	LastActivity *metav1.MicroTime `json:"lastActivity,omitempty"`

	// drainingSince is when the controller decided to put the target to sleep; set while
	// Draining. Resolvers acknowledge this exact drain by its value.
	// +optional
	DrainingSince *metav1.MicroTime `json:"drainingSince,omitempty"`

	// conditions are the Scaled, Ready and Sleep conditions of the latest signal.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true

// ScaleRequestList is a list of ScaleRequests.
type ScaleRequestList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	// items are the ScaleRequests.
	Items []ScaleRequest `json:"items"`
}

// Condition reasons. Failure reasons appear on the Scaled condition (the target could not be
// scaled) or on the Ready condition (it was scaled but did not become ready).
const (
	// ReasonScaledFromZero: the controller raised the target from zero replicas.
	ReasonScaledFromZero = "ScaledFromZero"
	// ReasonScaledUp: the controller raised the target from fewer than minReplicas.
	ReasonScaledUp = "ScaledUp"
	// ReasonAlreadyScaled: the target already had minReplicas; nothing was written.
	ReasonAlreadyScaled = "AlreadyScaled"
	// ReasonRescaleWindow: the target was scaled less than the rescale duration ago; the scale is deferred.
	ReasonRescaleWindow = "RescaleWindow"
	// ReasonScaleFight: something set the target below minReplicas while the request was active.
	ReasonScaleFight = "ScaleFight"
	// ReasonTargetReady: the target has minReplicas ready replicas.
	ReasonTargetReady = "TargetReady"
	// ReasonWaitingForReplicas: the target is scaled and its replicas are not all ready yet.
	ReasonWaitingForReplicas = "WaitingForReplicas"
	// ReasonReadyTimeout: the target did not become ready within the controller's ready timeout.
	ReasonReadyTimeout = "ReadyTimeout"
	// ReasonTargetNotFound: no target of that kind and name exists in the namespace.
	ReasonTargetNotFound = "TargetNotFound"
	// ReasonKindUnknown: the API server serves no such kind.
	ReasonKindUnknown = "KindUnknown"
	// ReasonNoScaleSubresource: the kind exists but has no /scale subresource.
	ReasonNoScaleSubresource = "NoScaleSubresource"
	// ReasonKindNotAllowed: the controller is not configured to scale this kind.
	ReasonKindNotAllowed = "KindNotAllowed"
	// ReasonForbidden: the controller lacks the RBAC rights to scale the target.
	ReasonForbidden = "Forbidden"
	// ReasonRejected: the API server refused the scale (an admission webhook or policy, a
	// validation error); the message carries the API's own words.
	ReasonRejected = "Rejected"
	// ReasonNotOptedIn: the target's owner has not marked it as wakeable (label
	// zerowake.dev/wake=true on the workload), so a ScaleRequest may not scale it.
	ReasonNotOptedIn = "NotOptedIn"
	// ReasonAboveOwnerCap: spec.minReplicas is above the cap the target's owner set
	// (annotation zerowake.dev/max-replicas on the workload).
	ReasonAboveOwnerCap = "AboveOwnerCap"
	// ReasonTargetScaledDown: the target was ready for the latest signal and has since been set
	// below minReplicas by something else; the request is Idle until signalled again.
	ReasonTargetScaledDown = "TargetScaledDown"
	// ReasonIdle: the target had no activity for its idle-after; it is Draining (Sleep True).
	ReasonIdle = "Idle"
	// ReasonDraining: Ready is False while the target is being put to sleep.
	ReasonDraining = "Draining"
	// ReasonAsleep: the controller scaled the idle target to zero (Ready False, Sleep True).
	ReasonAsleep = "Asleep"
	// ReasonSleepAborted: the latest sleep was called off before the target was lowered
	// (activity, a new signal, or the target changed since the decision).
	ReasonSleepAborted = "SleepAborted"
	// ReasonSleepOverridden: something else (an HPA's minimum, a GitOps tool) kept scaling the
	// target up while it slept without any activity; the controller stopped putting it to
	// sleep until its idle-after annotation changes.
	ReasonSleepOverridden = "SleepOverridden"
	// ReasonInvalidIdleAfter: the target's idle-after annotation is not a duration, or is below
	// the controller's minimum; the target is never put to sleep.
	ReasonInvalidIdleAfter = "InvalidIdleAfter"
	// ReasonTargetNotReady: the target was ready for the latest signal and still has
	// minReplicas, but fewer of them are ready now (a crash loop, a drain); the request is
	// Scaling until they are ready again, and fails with ReadyTimeout if they are not within
	// the controller's ready timeout of losing them.
	ReasonTargetNotReady = "TargetNotReady"
)

// The marks a workload's owner sets to let ScaleRequests wake it. They live on the workload, so
// setting them needs write access to the workload itself, which a ScaleRequest writer lacks.
const (
	// LabelWake, set to "true" on a workload, opts it in to being woken by ScaleRequests.
	LabelWake = GroupName + "/wake"
	// AnnotationMaxReplicas on a workload caps the spec.minReplicas a ScaleRequest may ask
	// for it (a positive integer). Without it, the ScaleRequest schema's own cap applies.
	AnnotationMaxReplicas = GroupName + "/max-replicas"
	// AnnotationIdleAfter on a workload (a duration, like "15m") asks the controller to scale it
	// to zero once it has had no activity for that long. Without it, replicas are never lowered.
	AnnotationIdleAfter = GroupName + "/idle-after"
)
