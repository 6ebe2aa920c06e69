// Package activity records when workloads that sleep when idle were last used, and lets gates
// tell the controller which drains they have seen.
//
// # Activity
//
// Each such workload has one coordination.k8s.io/v1 Lease, in its namespace, named by
// [LeaseName] and labelled [LabelActivity]. The controller creates it when the workload's owner
// sets the idle-after annotation and sets its spec.leaseDurationSeconds to the renewal interval,
// [Interval] (a fifth of idle-after, at least a second). Its spec.renewTime is the last recorded
// activity. A [Recorder] (the gate, the wake client, kubectl zerowake) renews it only when the
// copy its informer holds is at least one interval old, plus an offset of its own below a fifth
// of an interval, so that of several gates one renews and the others find its renewal in their
// caches: recording costs at most about one write per workload per interval however many callers
// there are, and nothing per call but a map lookup. A renewal carries the resourceVersion it
// read: a conflict means someone else renewed, which is all that was wanted.
//
// Because a renewal may lag the activity it records by up to [MaxLag], the controller takes a
// workload as idle only once it has seen no renewal for idle-after plus that lag, on its own
// clock (it times the changes it observes, never the writers' clocks).
//
// # Gate membership
//
// Each gate replica that lets requests through keeps a Lease of its own (label
// [LabelGateMember]) renewed every few seconds, and lists in its annotation [AnnotationDrainsSeen]
// the drains it has seen (see [DrainMark]). The controller lowers a draining workload only once
// every gate whose membership it has seen renewed within the lease's duration lists the drain. A
// gate that cannot renew stops letting requests through before the controller could take it for
// gone (see [FenceAfter]).
package activity
