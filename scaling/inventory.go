package scaling

import (
	"context"
	"fmt"
	"maps"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
)

// InventoryEntry is what the inventory holds of one workload.
type InventoryEntry struct {
	// State is the workload's replicas and readiness, as StateOf reads them.
	State TargetState
	// Annotations holds only the annotations the inventory was asked to keep.
	Annotations map[string]string
	// ResourceVersion is the workload's resourceVersion the entry reflects.
	ResourceVersion string
}

// Inventory follows the workloads that match a label selector (the ones their owners marked),
// kind by kind, in shared caches. It keeps only what decisions need (replicas, readiness, a few
// annotations), so its memory grows with the marked workloads of the kinds in use, not with the
// cluster, and answering costs no API call.
type Inventory struct {
	client      dynamic.Interface
	namespaces  []string
	selector    string
	annotations []string
	notify      func(gk schema.GroupKind, namespace, name string)

	mu    sync.Mutex
	kinds map[schema.GroupVersionResource]*inventoryKind
	stop  context.CancelFunc
	ctx   context.Context
	wg    sync.WaitGroup
}

type inventoryKind struct {
	gk schema.GroupKind
	// informers, one per namespace followed ("" for all).
	informers map[string]cache.SharedIndexInformer
}

// NewInventory returns an inventory over namespaces (nil or [""] for all) of the workloads
// matching selector (a label selector; "" follows every workload of a kind), keeping the named
// annotations. notify hears of every change that matters to a decision: replicas, readiness,
// the kept annotations, creation and deletion. It must not block.
func NewInventory(client dynamic.Interface, namespaces []string, selector string, annotations []string,
	notify func(gk schema.GroupKind, namespace, name string)) *Inventory {
	if len(namespaces) == 0 {
		namespaces = []string{""}
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Inventory{
		client: client, namespaces: namespaces, selector: selector, annotations: annotations, notify: notify,
		kinds: map[schema.GroupVersionResource]*inventoryKind{}, ctx: ctx, stop: stop,
	}
}

// Track starts following resource (of kind gk) if it is not followed yet; it does not wait.
func (i *Inventory) Track(_ context.Context, gk schema.GroupKind, resource schema.GroupVersionResource) {
	i.track(gk, resource)
}

func (i *Inventory) track(gk schema.GroupKind, resource schema.GroupVersionResource) *inventoryKind {
	i.mu.Lock()
	defer i.mu.Unlock()
	if k, ok := i.kinds[resource]; ok {
		return k
	}
	k := &inventoryKind{gk: gk, informers: map[string]cache.SharedIndexInformer{}}
	for _, ns := range i.namespaces {
		informer := dynamicinformer.NewFilteredDynamicInformer(i.client, resource, ns, 0, cache.Indexers{},
			func(o *metav1.ListOptions) { o.LabelSelector = i.selector }).Informer()
		_ = informer.SetTransform(i.trim)
		_, _ = informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(obj any) { i.changed(gk, obj) },
			UpdateFunc: func(oldObj, newObj any) {
				if !sameDecisionInputs(oldObj, newObj) {
					i.changed(gk, newObj)
				}
			},
			DeleteFunc: func(obj any) { i.changed(gk, obj) },
		})
		k.informers[ns] = informer
		i.wg.Go(func() { informer.RunWithContext(i.ctx) })
	}
	i.kinds[resource] = k
	return k
}

// Lookup returns the named workload of resource, following the resource first if needed and
// waiting (at most as long as ctx) for its cache to fill.
func (i *Inventory) Lookup(ctx context.Context, gk schema.GroupKind, resource schema.GroupVersionResource, namespace, name string) (InventoryEntry, bool, error) {
	k := i.track(gk, resource)
	informer, ok := k.informers[namespace]
	if !ok {
		informer, ok = k.informers[""]
	}
	if !ok {
		return InventoryEntry{}, false, nil
	}
	if !informer.HasSynced() && !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		return InventoryEntry{}, false, fmt.Errorf("waiting for the %s inventory cache: %w", resource.Resource, ctx.Err())
	}
	obj, exists, err := informer.GetIndexer().GetByKey(namespace + "/" + name)
	if err != nil || !exists {
		return InventoryEntry{}, false, err
	}
	o, ok := obj.(*inventoryObject)
	if !ok {
		return InventoryEntry{}, false, nil
	}
	return InventoryEntry{State: o.state, Annotations: o.Annotations, ResourceVersion: o.ResourceVersion}, true, nil
}

// Stop ends every informer and waits for them.
func (i *Inventory) Stop() {
	i.stop()
	i.wg.Wait()
}

func (i *Inventory) changed(gk schema.GroupKind, obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if o, ok := obj.(*inventoryObject); ok {
		i.notify(gk, o.Namespace, o.Name)
	}
}

// inventoryObject is what the inventory's caches hold of one workload: its key, the state
// decisions read and the kept annotations. A workload's full object, even trimmed to spec and
// status as unstructured maps, is some 3 KiB (status conditions, maps of maps); this is a tenth
// of that, so thousands of marked workloads cost little.
type inventoryObject struct {
	metav1.ObjectMeta
	state TargetState
}

// GetObjectKind and DeepCopyObject make inventoryObject a runtime.Object, as informers expect
// of what they store.
func (o *inventoryObject) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

func (o *inventoryObject) DeepCopyObject() runtime.Object {
	c := *o
	o.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	return &c
}

// trim turns a workload into an inventoryObject. It is idempotent, as an informer's transform
// must be: an object already trimmed is returned as it is.
func (i *Inventory) trim(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil
	}
	o := &inventoryObject{state: StateOf(u)}
	o.Namespace, o.Name, o.UID, o.ResourceVersion = u.GetNamespace(), u.GetName(), u.GetUID(), u.GetResourceVersion()
	if all := u.GetAnnotations(); len(all) > 0 {
		for _, key := range i.annotations {
			if v, ok := all[key]; ok {
				if o.Annotations == nil {
					o.Annotations = map[string]string{}
				}
				o.Annotations[key] = v
			}
		}
	}
	return o, nil
}

// sameDecisionInputs reports whether an update changed nothing a decision reads, as with a
// resync or a status field no rule uses.
func sameDecisionInputs(oldObj, newObj any) bool {
	o, ok1 := oldObj.(*inventoryObject)
	n, ok2 := newObj.(*inventoryObject)
	if !ok1 || !ok2 {
		return false
	}
	return o.state == n.state && maps.Equal(o.Annotations, n.Annotations)
}
