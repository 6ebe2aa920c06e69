{{/* The name of every namespaced object and of the ClusterRole: release "zerowake" gives the
names deploy/ uses, zerowake-controller. */}}
{{- define "zerowake.fullname" -}}
{{- printf "%s-controller" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* An image reference from values with repository, tag and digest: the digest wins, the tag
defaults to the chart's appVersion. Called with (list $ .Values.image). */}}
{{- define "zerowake.imageRef" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "zerowake.image" -}}
{{- include "zerowake.imageRef" (list . .Values.image) -}}
{{- end -}}

{{/* Exactly what the controller uses; the same rules as deploy/clusterrole.yaml. */}}
{{- define "zerowake.rules" -}}
- apiGroups: [zerowake.dev]
  resources: [scalerequests]
  verbs: [get, list, watch]
- apiGroups: [zerowake.dev]
  resources: [scalerequests/status]
  verbs: [update]
- apiGroups: [apps]
  resources: [deployments/scale, statefulsets/scale]
  verbs: [get, patch]
- apiGroups: [apps]
  resources: [deployments, statefulsets]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list, watch, create, update]
{{- with .Values.rbac.extraRules }}
{{ toYaml . }}
{{- end }}
{{- end -}}


{{/* The gate's name, for its objects and its ClusterRole: release "zerowake" gives
deploy/gate's names, zerowake-gate. */}}
{{- define "zerowake.gate.fullname" -}}
{{- printf "%s-gate" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The namespaces the gate serves, comma-separated: gate.namespaces, else the controller's;
empty when it serves all. Fails when neither names any and all namespaces were not asked for. */}}
{{- define "zerowake.gate.namespaces" -}}
{{- if not .Values.gate.allNamespaces -}}
{{- $namespaces := .Values.gate.namespaces | default .Values.namespaces -}}
{{- if not $namespaces -}}
{{- fail "gate.namespaces: name the namespaces whose workloads the gate may wake, or set gate.allNamespaces=true" -}}
{{- end -}}
{{- join "," $namespaces -}}
{{- end -}}
{{- end -}}

{{/* Exactly what the gate uses; the same rules as deploy/gate/rbac.yaml. */}}
{{- define "zerowake.gate.rules" -}}
# ScaleRequests: the signal (create, patch) and the gate's informer (get, list, watch).
- apiGroups: [zerowake.dev]
  resources: [scalerequests]
  verbs: [create, patch, get, list, watch]
# The kinds routes name, for the owner's opt-in and cap, from label-selected informers.
- apiGroups: [apps]
  resources: [deployments, statefulsets]
  verbs: [list, watch]
- apiGroups: [argoproj.io]
  resources: [rollouts]
  verbs: [list, watch]
# A target's Service is ready for the proxy once its EndpointSlices list a ready endpoint.
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
# Calls let through renew the activity Leases of targets that sleep when idle.
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list, watch, update]
{{- with .Values.gate.rbac.extraRules }}
{{ toYaml . }}
{{- end }}
{{- end -}}
