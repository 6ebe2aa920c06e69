package gate

import (
	"context"
	"time"

	"github.com/zerowake/zerowake/wake"
)

// NamespaceWakers serves several namespaces with one wake client each (each needs list and
// watch in its namespace only, which a RoleBinding gives). A target in any other namespace is
// not served: wake.ErrNamespaceNotWatched, answered 400 with no write.
type NamespaceWakers map[string]Waker

var _ Waker = NamespaceWakers(nil)

func (n NamespaceWakers) Demand(t wake.Target) wake.Status {
	if w, ok := n[t.Namespace]; ok {
		return w.Demand(t)
	}
	return wake.Status{}
}

func (n NamespaceWakers) Wake(ctx context.Context, t wake.Target) (wake.Action, error) {
	if w, ok := n[t.Namespace]; ok {
		return w.Wake(ctx, t)
	}
	return wake.ActionNone, wake.ErrNamespaceNotWatched
}

func (n NamespaceWakers) WaitReady(ctx context.Context, t wake.Target) (time.Duration, error) {
	if w, ok := n[t.Namespace]; ok {
		return w.WaitReady(ctx, t)
	}
	return 0, wake.ErrNamespaceNotWatched
}
