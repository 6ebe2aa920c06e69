package gate

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationclient "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/utils/clock"

	"github.com/zerowake/zerowake/activity"
	v1alpha1 "github.com/zerowake/zerowake/apis/zerowake/v1alpha1"
)

// Defaults of the membership Lease.
const (
	DefaultMembershipDuration = 15 * time.Second
	DefaultMembershipRenew    = 3 * time.Second
)

// Membership keeps this gate replica's membership Lease, through which the controller learns
// that the gate has seen a drain before it scales the target to zero. It lists every request
// the gate's cache shows Draining, and is renewed every few seconds and at once when that list
// changes. A gate that has not renewed it for activity.FenceAfter of its duration is fenced:
// it lets no call through (Serving is false), because the controller may by then take it for
// gone and put targets to sleep without its acknowledgement.
type Membership struct {
	leases    coordinationclient.LeasesGetter
	namespace string
	name      string
	duration  time.Duration
	renew     time.Duration
	clock     clock.PassiveClock
	logger    logr.Logger

	// lastOK is the start, in Unix nanoseconds, of the latest renewal the API server accepted.
	lastOK atomic.Int64

	mu    sync.Mutex
	marks map[string]string // namespace/name of a Draining request -> its DrainMark
	kick  chan struct{}
	lease *coordinationv1.Lease
}

// NewMembership returns the membership of a gate replica named name (unique per process) in
// namespace; Run keeps it.
func NewMembership(leases coordinationclient.LeasesGetter, namespace, name string, logger logr.Logger) *Membership {
	return &Membership{
		leases: leases, namespace: namespace, name: name,
		duration: DefaultMembershipDuration, renew: DefaultMembershipRenew,
		clock: clock.RealClock{}, logger: logger,
		marks: map[string]string{}, kick: make(chan struct{}, 1),
	}
}

// Serving reports whether the gate may let calls through: its membership was renewed recently
// enough that the controller still counts it, and so waits for its acknowledgements.
func (m *Membership) Serving() bool {
	if m == nil {
		return true
	}
	ok := m.lastOK.Load()
	return ok != 0 && m.clock.Now().UnixNano()-ok < int64(activity.FenceAfter(m.duration))
}

// Observe is the wake client's OnChange hook: it notes the requests that are Draining, and
// renews at once when their list changes. It runs after the client's answers reflect sr, so a
// drain is acknowledged only once this gate no longer lets calls through for it.
func (m *Membership) Observe(sr *v1alpha1.ScaleRequest, deleted bool) {
	key := sr.Namespace + "/" + sr.Name
	mark := ""
	if !deleted && sr.Status.Phase == v1alpha1.PhaseDraining && sr.Status.ObservedGeneration == sr.Generation && sr.Status.DrainingSince != nil {
		mark = activity.DrainMark(sr.Namespace, sr.Name, sr.Status.DrainingSince.Time)
	}
	m.mu.Lock()
	changed := m.marks[key] != mark
	if mark == "" {
		delete(m.marks, key)
	} else {
		m.marks[key] = mark
	}
	m.mu.Unlock()
	if changed && mark != "" {
		select {
		case m.kick <- struct{}{}:
		default:
		}
	}
}

// Run renews the membership until ctx ends, then deletes it.
func (m *Membership) Run(ctx context.Context) {
	ticker := time.NewTicker(m.renew)
	defer ticker.Stop()
	for {
		m.renewOnce(ctx)
		select {
		case <-ctx.Done():
			m.lastOK.Store(0)
			// A gate that leaves is not waited for; without the delete the controller waits
			// out the Lease's duration.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = m.leases.Leases(m.namespace).Delete(dctx, m.name, metav1.DeleteOptions{})
			cancel()
			return
		case <-ticker.C:
		case <-m.kick:
		}
	}
}

func (m *Membership) renewOnce(ctx context.Context) {
	start := m.clock.Now()
	m.mu.Lock()
	marks := make([]string, 0, len(m.marks))
	for _, mark := range m.marks {
		marks = append(marks, mark)
	}
	lease := m.lease
	m.mu.Unlock()

	rctx, cancel := context.WithTimeout(ctx, m.renew)
	defer cancel()
	client := m.leases.Leases(m.namespace)
	seconds := int32(m.duration / time.Second)
	now := metav1.NewMicroTime(start)
	value := activity.FormatMarks(marks)
	var err error
	for range 2 {
		if lease == nil {
			lease, err = client.Get(rctx, m.name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				lease, err = client.Create(rctx, &coordinationv1.Lease{
					ObjectMeta: metav1.ObjectMeta{Name: m.name, Namespace: m.namespace,
						Labels:      map[string]string{activity.LabelGateMember: "true"},
						Annotations: map[string]string{activity.AnnotationDrainsSeen: value}},
					Spec: coordinationv1.LeaseSpec{HolderIdentity: &m.name, LeaseDurationSeconds: &seconds, RenewTime: &now},
				}, metav1.CreateOptions{FieldManager: "zerowake-gate"})
				break
			}
			if err != nil {
				break
			}
		}
		next := lease.DeepCopy()
		if next.Annotations == nil {
			next.Annotations = map[string]string{}
		}
		next.Annotations[activity.AnnotationDrainsSeen] = value
		next.Spec.RenewTime, next.Spec.LeaseDurationSeconds = &now, &seconds
		lease, err = client.Update(rctx, next, metav1.UpdateOptions{FieldManager: "zerowake-gate"})
		if err == nil || !(apierrors.IsConflict(err) || apierrors.IsNotFound(err)) {
			break
		}
		lease = nil // someone else wrote it (or deleted it): read it again
	}
	if err != nil {
		m.mu.Lock()
		m.lease = nil
		m.mu.Unlock()
		m.logger.Info("Could not renew the gate's membership; calls are not let through once it is too old", "lease", m.namespace+"/"+m.name, "err", err.Error())
		return
	}
	m.mu.Lock()
	m.lease = lease
	m.mu.Unlock()
	m.lastOK.Store(start.UnixNano())
}
