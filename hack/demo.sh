#!/usr/bin/env bash
# The `make run` demo, run by `localcluster run` with KUBECONFIG pointing at a fresh local
# control plane: install the CRD, start the controller, wake a Deployment that sits at zero
# replicas, and show the ScaleRequest go Pending -> Scaling -> Ready. Then put a real proxy
# (Caddy, forward_auth to the wake gate) in front of another idle Deployment and curl it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kubectl=$("$root/hack/tools.sh" path kubectl)
: "${KUBECONFIG:?run me through: make run}"
k() { "$kubectl" --kubeconfig "$KUBECONFIG" "$@"; }
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "Installing the ScaleRequest CRD (kubectl apply -k crds/)"
k apply --server-side -k "$root/crds"
k wait --for=condition=Established crd/scalerequests.zerowake.dev --timeout=60s >/dev/null

log=$(dirname "$KUBECONFIG")/controller.log
say "Starting the controller (logs: $log)"
"$root/bin/zerowake-controller" --kubeconfig "$KUBECONFIG" --leader-elect=false --log-format=console \
	--ops-address=127.0.0.1:8080 >"$log" 2>&1 &
controller=$!
pids=($controller)
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null' EXIT
until curl -fsS http://127.0.0.1:8080/readyz >/dev/null 2>&1; do
	kill -0 $controller 2>/dev/null || { echo "controller exited:"; tail -20 "$log"; exit 1; }
	sleep 0.1
done

say "Creating namespace demo with Deployment web at 0 replicas"
k create namespace demo
k create deployment web -n demo --image=registry.example/web:1 --replicas=0
# Its owner lets ScaleRequests wake it (the controller scales only workloads marked so).
k label deployment web -n demo zerowake.dev/wake=true
# A wake asks for one replica unless the owner allows more; this one wakes to two.
k annotate deployment web -n demo zerowake.dev/max-replicas=2
k rollout status deployment/web -n demo --timeout=30s >/dev/null

say "A resolver signals demand: it creates ScaleRequest web"
# Follow every change of the request's phase while it wakes (kubectl itself in the background,
# not the k function's subshell, so that killing $watcher ends it).
"$kubectl" --kubeconfig "$KUBECONFIG" get scalerequest -n demo --watch -o custom-columns='PHASE:.status.phase,REPLICAS:.status.replicas,READY:.status.readyReplicas,SCALED:.status.conditions[?(@.type=="Scaled")].reason,COLD-START:.status.coldStartDuration' &
watcher=$!
cat <<YAML | k apply -f -
apiVersion: zerowake.dev/v1alpha1
kind: ScaleRequest
metadata:
  name: web
  namespace: demo
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 2
  requestedAt: "$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)"
YAML
k wait --for=condition=Ready scalerequest/web -n demo --timeout=60s >/dev/null
sleep 0.5
kill $watcher 2>/dev/null || true
wait $watcher 2>/dev/null || true

say "kubectl get scalerequests -n demo"
k get scalerequests -n demo
say "Events"
k get events -n demo --field-selector involvedObject.kind=ScaleRequest -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message
say "The Deployment"
k get deployment web -n demo

say "A proxy in front of an idle service: Caddy asks the wake gate (forward_auth) before forwarding"
k create deployment api -n demo --image=registry.example/api:1 --replicas=0
# The owner allows waking it on request.
k label deployment api -n demo zerowake.dev/wake=true
dir=$(dirname "$KUBECONFIG")
"$root/bin/zerowake-gate" --kubeconfig "$KUBECONFIG" --all-namespaces --address=127.0.0.1:8000 --ops-address=127.0.0.1:8081 \
	--log-format=console >"$dir/gate.log" 2>&1 &
pids+=($!)
until curl -fsS http://127.0.0.1:8081/readyz >/dev/null 2>&1; do sleep 0.1; done
# Port 8091 stands in for the api pods (kwok pods serve nothing).
cat >"$dir/Caddyfile" <<CADDY
{
	admin off
	auto_https off
	persist_config off
}
http://127.0.0.1:8090 {
	forward_auth 127.0.0.1:8000 {
		uri /auth?target=demo/deployment/api&timeout=60s
	}
	reverse_proxy 127.0.0.1:8091
}
http://127.0.0.1:8091 {
	respond "hello from api"
}
CADDY
XDG_DATA_HOME=$dir XDG_CONFIG_HOME=$dir "$("$root/hack/tools.sh" path caddy)" run --config "$dir/Caddyfile" \
	--adapter caddyfile >"$dir/caddy.log" 2>&1 &
pids+=($!)
until curl -sS -o /dev/null http://127.0.0.1:8091/ 2>/dev/null; do sleep 0.1; done
k get deployment api -n demo
say "curl http://127.0.0.1:8090/ (held by the gate while api wakes)"
curl -sS -w '\nHTTP %{http_code} after %{time_total}s\n' http://127.0.0.1:8090/
k get deployment api -n demo
k get scalerequest api -n demo

cat <<EOF2

The control plane and the controller keep running. In another terminal:

  export KUBECONFIG=$KUBECONFIG
  $kubectl get sr -A
  $kubectl scale deployment web -n demo --replicas=0
  $kubectl patch sr web -n demo --type=merge -p '{"spec":{"requestedAt":"'\$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)'"}}'

Metrics: curl http://127.0.0.1:8080/metrics | grep zerowake_     (the gate's: port 8081)
Press Ctrl-C to stop everything (nothing is left running).
EOF2
wait $controller
