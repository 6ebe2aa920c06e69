package framework

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
)

// EndpointZone is the DNS zone an EndpointResolver answers for: SERVICE.NAMESPACE.EndpointZone
// names the ready addresses of a Service.
const EndpointZone = "endpoints.zerowake."

// EndpointResolver tells a proxy where a Service's ready endpoints are, as an ingress controller
// learns it: from the Service's EndpointSlices, watched. It answers DNS A queries for
// SERVICE.NAMESPACE.endpoints.zerowake. with the ready addresses, on a unix socket.
//
// Why DNS and not a configuration pushed to the proxy: Caddy keeps a request on the
// configuration it arrived under, so a request held by the gate while its target wakes would
// still see the old, empty upstream list after a reload. Caddy's dynamic upstreams ("dynamic
// a") ask again on every attempt, so the request that woke the target reaches the endpoint that
// became ready while it was held. A unix socket needs no address in the node's network
// namespace, and the proxy inside that namespace reaches it through the file system.
type EndpointResolver struct {
	socket   string
	listener net.Listener
	slices   discoverylisters.EndpointSliceLister
	stop     context.CancelFunc
	wg       sync.WaitGroup

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every EndpointSlice event
}

// StartEndpointResolver watches every EndpointSlice with client and answers on socket (a path,
// short enough for a unix socket) once the watch has synced.
func StartEndpointResolver(ctx context.Context, client kubernetes.Interface, socket string) (*EndpointResolver, error) {
	_ = os.Remove(socket)
	l, err := net.Listen("unix", socket)
	if err != nil {
		return nil, err
	}
	runCtx, stop := context.WithCancel(context.Background())
	factory := informers.NewSharedInformerFactory(client, 0)
	informer := factory.Discovery().V1().EndpointSlices()
	r := &EndpointResolver{socket: socket, listener: l, slices: informer.Lister(), stop: stop, changed: make(chan struct{})}
	notify := func(any) { r.notify() }
	if _, err := informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: notify, DeleteFunc: notify, UpdateFunc: func(_, obj any) { notify(obj) },
	}); err != nil {
		stop()
		l.Close()
		return nil, err
	}
	factory.Start(runCtx.Done())
	syncCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), informer.Informer().HasSynced) {
		stop()
		l.Close()
		factory.Shutdown()
		return nil, errors.New("endpoint resolver: the EndpointSlice watch did not sync within 30s")
	}
	r.wg.Go(func() {
		<-runCtx.Done()
		factory.Shutdown()
	})
	r.wg.Go(r.serve)
	return r, nil
}

// Socket is the unix socket the resolver answers on.
func (r *EndpointResolver) Socket() string { return r.socket }

// Name is the DNS name of Service namespace/service's ready endpoints.
func (r *EndpointResolver) Name(namespace, service string) string {
	return service + "." + namespace + "." + EndpointZone
}

// Ready returns the ready addresses of Service namespace/service, sorted: the endpoints whose
// Ready condition is true or unset (the EndpointSlice API's meaning of unset), as ingress
// controllers choose them. Terminating endpoints are not ready.
func (r *EndpointResolver) Ready(namespace, service string) []string {
	selector := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: service})
	list, err := r.slices.EndpointSlices(namespace).List(selector)
	if err != nil {
		return nil
	}
	var out []string
	for _, slice := range list {
		if slice.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		for _, ep := range slice.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			out = append(out, ep.Addresses...)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (r *EndpointResolver) notify() {
	r.mu.Lock()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

func (r *EndpointResolver) changes() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// WaitFor returns once ok holds for Service namespace/service's ready addresses, checking as
// the watch delivers each EndpointSlice change, so the moment is the watch's, not a poll's.
func (r *EndpointResolver) WaitFor(ctx context.Context, namespace, service string, ok func(ready []string) bool) error {
	for {
		changed := r.changes()
		if ok(r.Ready(namespace, service)) {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the endpoints of %s/%s (now %v): %w", namespace, service, r.Ready(namespace, service), ctx.Err())
		}
	}
}

// Stop ends the watch and closes the socket.
func (r *EndpointResolver) Stop() {
	r.stop()
	r.listener.Close()
	r.wg.Wait()
	_ = os.Remove(r.socket)
}

func (r *EndpointResolver) serve() {
	for {
		conn, err := r.listener.Accept()
		if err != nil {
			return
		}
		go r.answer(conn)
	}
}

// answer serves one connection. Go's resolver treats a unix connection as a packet connection:
// each query is one write, each answer one write, with no length prefix.
func (r *EndpointResolver) answer(conn net.Conn) {
	defer conn.Close()
	buf := make([]byte, 1500)
	for {
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			return
		}
		reply, err := r.reply(buf[:n])
		if err != nil {
			return
		}
		if _, err := conn.Write(reply); err != nil {
			return
		}
	}
}

// maxAnswers keeps an answer far below the 512 bytes of a plain DNS message, so it is never
// truncated (a truncated answer would send the client to TCP).
const maxAnswers = 16

// reply builds the answer to one query message.
func (r *EndpointResolver) reply(query []byte) ([]byte, error) {
	var p dnsmessage.Parser
	header, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	questions, err := p.AllQuestions()
	if err != nil {
		return nil, err
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: header.ID, Response: true, Authoritative: true, RecursionDesired: header.RecursionDesired})
	b.EnableCompression()
	type answer struct {
		name dnsmessage.Name
		a    dnsmessage.AResource
	}
	var answers []answer
	known := len(questions) > 0
	for _, q := range questions {
		namespace, service, ok := r.parseName(q.Name.String())
		if !ok {
			known = false
			continue
		}
		if q.Type != dnsmessage.TypeA || q.Class != dnsmessage.ClassINET {
			continue // a name we know with no records of this type: an empty answer
		}
		for _, addr := range r.Ready(namespace, service) {
			ip := net.ParseIP(addr).To4()
			if ip == nil || len(answers) == maxAnswers {
				continue
			}
			answers = append(answers, answer{q.Name, dnsmessage.AResource{A: [4]byte(ip)}})
		}
	}
	if !known {
		h := dnsmessage.Header{ID: header.ID, Response: true, Authoritative: true, RCode: dnsmessage.RCodeNameError}
		b = dnsmessage.NewBuilder(nil, h)
	}
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	for _, q := range questions {
		if err := b.Question(q); err != nil {
			return nil, err
		}
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	if known {
		for _, a := range answers {
			// TTL 0: the proxy asks again whenever its own refresh interval passes.
			rh := dnsmessage.ResourceHeader{Name: a.name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 0}
			if err := b.AResource(rh, a.a); err != nil {
				return nil, err
			}
		}
	}
	return b.Finish()
}

// parseName splits SERVICE.NAMESPACE.endpoints.zerowake. into its parts.
func (r *EndpointResolver) parseName(name string) (namespace, service string, ok bool) {
	rest, found := strings.CutSuffix(strings.ToLower(name), "."+EndpointZone)
	if !found {
		return "", "", false
	}
	service, namespace, found = strings.Cut(rest, ".")
	if !found || service == "" || namespace == "" || strings.Contains(namespace, ".") {
		return "", "", false
	}
	return namespace, service, true
}

// String names the resolver in messages.
func (r *EndpointResolver) String() string { return fmt.Sprintf("endpoint resolver on %s", r.socket) }
