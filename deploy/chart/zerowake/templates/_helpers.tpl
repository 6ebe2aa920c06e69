{{/* The name of every namespaced object and of the ClusterRole: release "zerowake" gives the
names deploy/ uses, zerowake-controller. */}}
{{- define "zerowake.fullname" -}}
{{- printf "%s-controller" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "zerowake.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
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
{{- with .Values.rbac.extraRules }}
{{ toYaml . }}
{{- end }}
{{- end -}}
