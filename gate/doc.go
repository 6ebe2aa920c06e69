// Package gate answers proxies' forward-auth calls for services that may be scaled to zero: a
// resolver for nginx (auth_request), Traefik (forwardAuth), Caddy (forward_auth) and Envoy
// (ext_authz, HTTP mode), built on the wake client.
//
// For each call the gate reads the route's targets from the call (see [Gate.Handler]) and
//
//   - lets the request through at once (200) when every target's ScaleRequest is Ready, as
//     the wake client's informer shows it, and, when the route names the Service its proxy
//     sends to, that Service's EndpointSlices list enough ready endpoints, as the gate's
//     per-Service informer shows them: no API call, no write;
//   - otherwise signals demand with [wake.Client.Wake] (one write per target however many
//     calls arrive) and holds the call until every target is ready and the route's Service
//     lists enough ready endpoints (200), the route's timeout
//     passes (503 with Retry-After), the controller refuses a target because its owner has not
//     opted in (403, with what the owner can do), or fails it (503);
//   - answers a browser's page load at once with a self-refreshing "starting up" page (503)
//     when the route asks for it, instead of holding it;
//   - answers 503 at once when a target already has its cap of held calls, so a flood cannot
//     exhaust the gate's memory.
//
// For workloads that sleep when idle (see package activity), every call let through records
// activity, and a gate with a [Membership] acknowledges each drain it sees and lets no call
// through at all once it cannot renew its membership (503, reason GateFenced).
//
// The decisions are plain functions over the wake client's state ([Gate.Check] and the helpers
// it calls); the HTTP handler only reads parameters and writes answers. The gate keeps no
// state of its own beyond the calls it holds: replicas need no leader, and a restarted gate
// loses no wake, because the signal is the ScaleRequest.
package gate
