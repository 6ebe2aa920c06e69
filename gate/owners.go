package gate

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
	"github.com/zerowake/zerowake/scaling"
	"github.com/zerowake/zerowake/wake"
)

// Owners says whether a workload's owner allows waking it as a target asks. The gate asks it
// before every write, so that a caller can make it write only for workloads their owners opted
// in, up to their caps.
type Owners interface {
	// Refusal returns "" when t may be signalled, and otherwise the reason it may not:
	// ReasonNotOptedIn (not labelled zerowake.dev/wake=true, or no such workload),
	// ReasonAboveOwnerCap (more replicas than the owner's cap), or v1alpha1.ReasonKindUnknown.
	Refusal(ctx context.Context, t wake.Target) (string, error)
}

// DefaultMaxReplicas is the cap of a workload whose owner set no zerowake.dev/max-replicas,
// as the controller's --default-max-replicas.
const DefaultMaxReplicas = 1

// InventoryOwners answers from the inventory the controller uses: label-selected informers over
// the opted-in workloads of the kinds routes name (followed from the first route that names
// one), so that an answer costs no API call once a kind's cache has synced.
type InventoryOwners struct {
	inventory   *scaling.Inventory
	mapper      meta.RESTMapper
	defaultMax  int32
	unknownWait time.Duration

	mu sync.Mutex
	// kinds caches what the mapper said of each kind a route named: a resource, or an error
	// until retryAt. Negative answers are bounded (maxUnknownKinds) and the mapper's discovery
	// cache is refreshed at most once per unknownWait, so unknown kinds cost little.
	kinds     map[schema.GroupKind]kindResolution
	unknown   int
	lastReset time.Time
}

type kindResolution struct {
	resource schema.GroupVersionResource
	err      error
	retryAt  time.Time
}

const maxUnknownKinds = 256

// errKindUnknown marks a kind discovery does not know.
var errKindUnknown = errors.New("kind unknown")

// NewInventoryOwners follows the opted-in workloads in namespaces (nil: all) through client,
// resolving kinds with mapper. defaultMax is the cap when a workload has no cap annotation.
func NewInventoryOwners(client dynamic.Interface, mapper meta.RESTMapper, namespaces []string, defaultMax int32) *InventoryOwners {
	return &InventoryOwners{
		inventory: scaling.NewInventory(client, namespaces, v1alpha1.LabelWake+"=true",
			[]string{v1alpha1.AnnotationMaxReplicas}, func(schema.GroupKind, string, string) {}),
		mapper: mapper, defaultMax: defaultMax, unknownWait: time.Minute,
		kinds: map[schema.GroupKind]kindResolution{},
	}
}

// Stop ends the inventory's informers.
func (o *InventoryOwners) Stop() { o.inventory.Stop() }

// Refusal implements Owners. The first call for a kind waits (within ctx) for its cache.
func (o *InventoryOwners) Refusal(ctx context.Context, t wake.Target) (string, error) {
	group, version := "", t.APIVersion
	if i := strings.IndexByte(t.APIVersion, '/'); i >= 0 {
		group, version = t.APIVersion[:i], t.APIVersion[i+1:]
	}
	gk := schema.GroupKind{Group: group, Kind: t.Kind}
	resource, err := o.resource(gk, version)
	if errors.Is(err, errKindUnknown) {
		return v1alpha1.ReasonKindUnknown, nil
	}
	if err != nil {
		return "", err
	}
	entry, found, err := o.inventory.Lookup(ctx, gk, resource, t.Namespace, t.Name)
	if err != nil {
		return "", err
	}
	if !found {
		return ReasonNotOptedIn, nil
	}
	return capRefusal(entry.Annotations, o.defaultMax, t.MinReplicas), nil
}

// capRefusal applies the owner's cap as the controller does: a cap that is not a positive
// integer allows nothing; no cap means defaultMax.
func capRefusal(annotations map[string]string, defaultMax, minReplicas int32) string {
	limit := int64(defaultMax)
	if raw, ok := annotations[v1alpha1.AnnotationMaxReplicas]; ok {
		n, err := strconv.ParseInt(raw, 10, 32)
		if err != nil || n < 1 {
			return ReasonAboveOwnerCap
		}
		limit = n
	}
	if int64(max(minReplicas, 1)) > limit {
		return ReasonAboveOwnerCap
	}
	return ""
}

func (o *InventoryOwners) resource(gk schema.GroupKind, version string) (schema.GroupVersionResource, error) {
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if k, ok := o.kinds[gk]; ok && (k.err == nil || now.Before(k.retryAt)) {
		return k.resource, k.err
	}
	mapping, err := o.mapper.RESTMapping(gk, version)
	if r, ok := o.mapper.(meta.ResettableRESTMapper); ok && meta.IsNoMatchError(err) && now.Sub(o.lastReset) >= o.unknownWait {
		// Perhaps installed since discovery was read: read it again, at most once a while.
		o.lastReset = now
		r.Reset()
		mapping, err = o.mapper.RESTMapping(gk, version)
	}
	switch {
	case err == nil:
		if prev, ok := o.kinds[gk]; ok && prev.err != nil {
			o.unknown--
		}
		o.kinds[gk] = kindResolution{resource: mapping.Resource}
		return mapping.Resource, nil
	case meta.IsNoMatchError(err):
		err = errKindUnknown
	}
	if _, ok := o.kinds[gk]; ok || o.unknown < maxUnknownKinds {
		if !ok {
			o.unknown++
		}
		o.kinds[gk] = kindResolution{err: err, retryAt: now.Add(o.unknownWait)}
	}
	return schema.GroupVersionResource{}, err
}
