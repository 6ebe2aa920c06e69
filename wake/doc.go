// Package wake is the resolver's half of the zerowake contract: it signals demand for an idle
// workload by writing a ScaleRequest (zerowake.dev/v1alpha1) and waits, on informer events, for
// the controller to report the workload ready.
//
// # Signalling
//
// [Client.Wake] makes sure the latest signal for a target asks for it to be up. The ScaleRequest
// is named after the target, in the target's namespace, and
//
//   - is created (spec.requestedAt = now) when none exists;
//   - is left alone when its latest signal is still active: metadata.generation not yet served
//     (status.observedGeneration < metadata.generation), or phase Pending or Scaling;
//   - gets spec.requestedAt bumped at once when it is Draining or Asleep: the controller is
//     putting the target to sleep, or did (its owner asked, annotation zerowake.dev/idle-after);
//     the signal calls a drain off, or wakes the target;
//   - gets spec.requestedAt bumped at once when it is Idle: it was served, and its target has
//     since been set back below its minimum (by an idler, a GitOps revert), so the target has no
//     pods to forward to. The controller keeps a Ready request's status following its target,
//     so Ready is not believed after the target went back to zero; the controller defers the
//     new scale at most to the end of its rescale window;
//   - is left alone when it is Ready or Failed and its signal (spec.requestedAt, or the creation
//     time) is younger than the window;
//   - otherwise (Ready or Failed, signal older than the window) gets spec.requestedAt bumped with
//     a JSON merge patch. The patch carries no resourceVersion, so it never conflicts; because
//     it changes spec, metadata.generation moves and the controller acts again.
//
// A patch also raises spec.minReplicas when a caller asks for more than the request holds. It
// lowers it only when the latest signal was refused for asking more than the owner allows
// (Failed, AboveOwnerCap): a caller asking less is then written at once, inside the window too.
// Otherwise a signal keeps the higher number another caller asked for, so that two routes asking
// different numbers do not take turns rewriting the request.
//
// # Stale answers
//
// A Wake answered without a write, and a [Client.Demand] that finds the target Ready, come
// from the informer's cache, which may not have seen an outside idler set the target back to
// zero a moment ago. The client remembers, per request, when it last answered so (one atomic
// store, no allocation). When the informer then shows the request Idle for its latest signal
// (Ready False, reason TargetScaledDown) and that demand is no older than the Ready
// condition's lastTransitionTime less [DemandSkew], the client signals again by itself, once
// per such transition. [Client.WaitReady], finding Idle for the generation it waits on,
// signals again too rather than waiting for its context to end.
//
// The window (default 30s) should equal the controller's --rescale-duration: the controller
// scales a target at most once per window, so a second write inside it could only be deferred.
//
// # Cost
//
// State comes from an informer (all namespaces or one, see [Options.Namespace]); Wake never
// GETs. The client also remembers what it wrote and when, because the informer may not have
// delivered its own write yet: after a successful write every Wake for that target within the
// window returns at once. Every Wake that needs no write (recently signalled, active, Ready or
// Failed and fresh) reads a lock-free copy-on-write index and costs no API call, no lock and no
// allocation. Concurrent Wake calls that do need a write share one API call per target
// (singleflight). A failed write is remembered for [Options.ErrorBackoff] so that a resolver
// under load does not hammer an API server that refuses it.
//
// # Waiting
//
// [Client.WaitReady] returns when the latest signal is Ready, that is, when the Ready condition
// is True and its observedGeneration equals metadata.generation; it returns the cold-start time
// the controller recorded in status.coldStartDuration. It returns a [*FailedError] when the
// phase is Failed and status.observedGeneration equals metadata.generation; its Reason is the
// reason of the Scaled or Ready condition that is False for that generation (TargetNotFound,
// KindUnknown, NoScaleSubresource, KindNotAllowed, Forbidden, Rejected, NotOptedIn,
// AboveOwnerCap, ReadyTimeout). An Idle request is neither: WaitReady signals again, once per
// generation, and waits for that signal's answer. A request the controller moved from Ready
// back to Scaling (its target lost ready pods, reason TargetNotReady) is still being served:
// Wake writes nothing and WaitReady keeps waiting. When this client
// wrote the latest signal itself, WaitReady ignores older generations the informer may still
// hold, so a Ready status left over from an earlier signal is never mistaken for the new one.
// Waiting is driven by informer events delivered to per-target channels, never by polling.
//
// # Activity
//
// With [Options.Activity] set (an *activity.Recorder), every Wake records activity of its target,
// so that a workload that sleeps when idle starts its idle time afresh; it costs a cache lookup,
// and at most one write per target per interval. [Options.OnChange] lets a gate acknowledge the
// drains its cache shows.
//
// # Lifecycle
//
// A Client is created with [New] or [NewForConfig], started once with [Client.Start] (which
// waits for the informer cache to sync) and stopped with [Client.Stop] or by cancelling the
// context given to Start. Stop waits for the informer and any in-flight write to finish. All
// methods are safe for concurrent use.
package wake
