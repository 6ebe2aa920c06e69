package scaling

import (
	"context"
	"strconv"
	"strings"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
)

// TargetState is what a watch last saw of a target.
type TargetState struct {
	// Exists is false once the target has been deleted (or was never there).
	Exists bool
	// Generation is the target's metadata.generation.
	Generation int64
	// Replicas is spec.replicas.
	Replicas int32
	// ReadyReplicas is the count the readiness rule takes (see StateOf): status.readyReplicas,
	// status.availableReplicas or status.replicas.
	ReadyReplicas int32
	// Current is false while the target's own controller has not yet observed its latest spec
	// (status.observedGeneration < metadata.generation): its ready count may predate a scale.
	Current bool
}

// ReadyFor reports whether the target has at least minReplicas ready replicas counted against
// its latest spec.
func (s TargetState) ReadyFor(minReplicas int32) bool {
	return s.Exists && s.Current && s.ReadyReplicas >= minReplicas && s.Replicas >= minReplicas
}

// publishesReadyReplicas lists kinds known to report status.readyReplicas but to omit it while it
// is zero (Go's omitempty). For them an absent field means none ready, never "look elsewhere":
// a Deployment with one replica starting has status.replicas 1 and no readyReplicas.
var publishesReadyReplicas = map[schema.GroupKind]bool{
	{Group: "apps", Kind: "Deployment"}:        true,
	{Group: "apps", Kind: "StatefulSet"}:       true,
	{Group: "apps", Kind: "ReplicaSet"}:        true,
	{Group: "", Kind: "ReplicationController"}: true,
	{Group: "argoproj.io", Kind: "Rollout"}:    true,
}

// StateOf reads a TargetState from any workload that serves /scale. The readiness rule:
//
//   - The ready count is status.readyReplicas for the kinds in publishesReadyReplicas (absent
//     means 0) and for any object whose status has the field.
//   - Otherwise status.availableReplicas, if the status has it: some kinds publish only that,
//     which counts replicas ready for at least their minReadySeconds.
//   - Otherwise status.replicas, the field a /scale subresource conventionally reports as its
//     status (statusReplicasPath): a kind that publishes no readiness count says only how many
//     replicas its controller runs, and that is the most it can tell. A kind that reports
//     readiness under another name, or reads replicas from a path other than spec.replicas, is
//     judged by these fields all the same.
//   - The count is trusted only for the latest spec: if status.observedGeneration is present,
//     as an integer or as a string holding one (Argo Rollouts write it so), it must be at least
//     metadata.generation. An observedGeneration that is not a number (old Rollouts wrote a
//     hash) cannot be compared and is treated as absent, as are kinds without the field.
//
// A kind outside publishesReadyReplicas that omits a zero readyReplicas and availableReplicas
// looks like one that publishes neither, and is judged by status.replicas.
func StateOf(obj *unstructured.Unstructured) TargetState {
	replicas, _, _ := unstructured.NestedInt64(obj.Object, "spec", "replicas")
	ready := readyCount(obj)
	observed, hasObserved := observedGeneration(obj)
	return TargetState{
		Exists:        true,
		Generation:    obj.GetGeneration(),
		Replicas:      int32(replicas),
		ReadyReplicas: int32(ready),
		Current:       !hasObserved || observed >= obj.GetGeneration(),
	}
}

// readyCount applies StateOf's rule for the ready count.
func readyCount(obj *unstructured.Unstructured) int64 {
	status, _, _ := unstructured.NestedMap(obj.Object, "status")
	gk := obj.GroupVersionKind().GroupKind()
	if n, ok := integer(status["readyReplicas"]); ok || publishesReadyReplicas[gk] {
		return n
	}
	if n, ok := integer(status["availableReplicas"]); ok {
		return n
	}
	n, _ := integer(status["replicas"])
	return n
}

// observedGeneration reads status.observedGeneration, written as an integer by most kinds and
// as a decimal string by Argo Rollouts.
func observedGeneration(obj *unstructured.Unstructured) (int64, bool) {
	v, found, _ := unstructured.NestedFieldNoCopy(obj.Object, "status", "observedGeneration")
	if !found {
		return 0, false
	}
	if s, ok := v.(string); ok {
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		return n, err == nil
	}
	return integer(v)
}

// integer reads a JSON number as decoded into unstructured content.
func integer(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case int32:
		return int64(n), true
	case int:
		return int64(n), true
	case float64:
		return int64(n), n == float64(int64(n))
	}
	return 0, false
}

// Watcher watches individual targets while someone waits for them, so that memory and watches
// grow with the number of targets being woken, not with the number of workloads in the cluster.
// Each change is reported to notify with the id the target was registered under.
type Watcher struct {
	client dynamic.Interface
	notify func(id string)

	mu      sync.Mutex
	targets map[string]*watchedTarget
}

type watchedTarget struct {
	resource  schema.GroupVersionResource
	namespace string
	name      string
	stop      context.CancelFunc
	done      chan struct{}

	// state and seen are guarded by Watcher.mu.
	state TargetState
	seen  bool
}

// NewWatcher returns a Watcher that reports changes to notify. notify must not block for long.
func NewWatcher(client dynamic.Interface, notify func(id string)) *Watcher {
	return &Watcher{client: client, notify: notify, targets: map[string]*watchedTarget{}}
}

// Watch starts watching the named object of resource under id; it is a no-op if id is already
// watched for the same object. The watch ends with Forget, StopAll or ctx. after, the
// resourceVersion of a write the caller made, needs no handling here: a watch started after
// the write lists the target as it is since.
func (w *Watcher) Watch(ctx context.Context, id string, resource schema.GroupVersionResource, namespace, name, after string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if t, ok := w.targets[id]; ok {
		if t.resource == resource && t.namespace == namespace && t.name == name {
			return
		}
		t.stop()
	}
	ctx, stop := context.WithCancel(ctx)
	t := &watchedTarget{resource: resource, namespace: namespace, name: name, stop: stop, done: make(chan struct{})}
	w.targets[id] = t
	go w.run(ctx, id, t)
}

func (w *Watcher) run(ctx context.Context, id string, t *watchedTarget) {
	defer close(t.done)
	client := w.client.Resource(t.resource).Namespace(t.namespace)
	byName := fields.OneTermEqualSelector("metadata.name", t.name).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, options metav1.ListOptions) (runtime.Object, error) {
			options.FieldSelector = byName
			return client.List(ctx, options)
		},
		WatchFuncWithContext: func(ctx context.Context, options metav1.ListOptions) (watch.Interface, error) {
			options.FieldSelector = byName
			return client.Watch(ctx, options)
		},
	}
	record := func(state TargetState) {
		w.mu.Lock()
		if w.targets[id] != t {
			w.mu.Unlock()
			return
		}
		t.state, t.seen = state, true
		w.mu.Unlock()
		w.notify(id)
	}
	// A bare reflector, not an informer: there is one object to follow and nothing to cache
	// or fan out, and a burst of wakes runs one of these per target, so each goroutine and
	// queue an informer adds would be paid a thousand times over.
	reflector := cache.NewReflectorWithOptions(
		// Keeps watch-list streaming when the client supports it and falls back when not (fakes).
		cache.ToListWatcherWithWatchListSemantics(lw, w.client),
		&unstructured.Unstructured{}, targetStore{record: record},
		cache.ReflectorOptions{Name: "target " + t.resource.Resource + " " + t.namespace + "/" + t.name})
	reflector.RunWithContext(ctx)
}

// targetStore takes a reflector's updates for one target (the field selector matches at most
// one object) and records the state; it keeps nothing itself.
type targetStore struct {
	record func(TargetState)
}

func (s targetStore) Add(obj any) error    { s.record(stateOfObject(obj)); return nil }
func (s targetStore) Update(obj any) error { s.record(stateOfObject(obj)); return nil }
func (s targetStore) Delete(any) error     { s.record(TargetState{}); return nil }
func (s targetStore) Resync() error        { return nil }

// Replace is the reflector's (re)list: an empty one means the target does not exist.
func (s targetStore) Replace(list []any, _ string) error {
	if len(list) == 0 {
		s.record(TargetState{})
		return nil
	}
	s.record(stateOfObject(list[len(list)-1]))
	return nil
}

func stateOfObject(obj any) TargetState {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return TargetState{}
	}
	return StateOf(u)
}

// State returns the last state seen for id; ok is false until the watch has listed the target.
func (w *Watcher) State(id string) (state TargetState, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, found := w.targets[id]
	if !found || !t.seen {
		return TargetState{}, false
	}
	return t.state, true
}

// Forget stops watching id.
func (w *Watcher) Forget(id string) {
	w.mu.Lock()
	t, ok := w.targets[id]
	delete(w.targets, id)
	w.mu.Unlock()
	if ok {
		t.stop()
	}
}

// Len is the number of targets being watched.
func (w *Watcher) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.targets)
}

// StopAll stops every watch and waits for them to end.
func (w *Watcher) StopAll() {
	w.mu.Lock()
	targets := w.targets
	w.targets = map[string]*watchedTarget{}
	w.mu.Unlock()
	for _, t := range targets {
		t.stop()
	}
	for _, t := range targets {
		<-t.done
	}
}
