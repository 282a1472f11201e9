{{/* The name of every object: the release name, or rainbowd-<release> if it lacks "rainbowd". */}}
{{- define "rainbowd.fullname" -}}
{{- if contains "rainbowd" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "rainbowd-%s" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selects this release's rainbowd pods: k8s/base's name label and the release, so two
    releases in one namespace never select each other's pods. */}}
{{- define "rainbowd.selectorLabels" -}}
app.kubernetes.io/name: rainbowd
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* On every object's metadata: the selector labels and Helm's usual bookkeeping. */}}
{{- define "rainbowd.labels" -}}
{{ include "rainbowd.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The labels of the Prometheus Operator objects: the usual ones plus monitoring.labels. */}}
{{- define "rainbowd.monitoringLabels" -}}
{{ include "rainbowd.labels" . }}
{{- with .Values.monitoring.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The ServiceAccount as an RBAC subject. */}}
{{- define "rainbowd.subject" -}}
- kind: ServiceAccount
  name: {{ include "rainbowd.fullname" . }}
  namespace: {{ .Release.Namespace }}
{{- end -}}

{{/* What rainbowd does to the apps it manages, cluster-wide (ClusterRole) or per namespace (Role):
the rules of k8s/base's ClusterRole, copied into files/app-rules.yaml by scripts/sync_manifests.py. */}}
{{- define "rainbowd.appRules" -}}
{{- (.Files.Get "files/app-rules.yaml" | fromYaml).rules | toYaml -}}
{{- end -}}

{{/* The same per namespace, but KEDA's objects only with namespaced.keda and Argo Rollouts' only
with namespaced.argoRollouts: Kubernetes' admin role does not hold them, so a namespace admin
could not grant them (k8s/namespaced/keda-role.yaml, argo-rollouts-role.yaml). */}}
{{- define "rainbowd.namespacedRules" -}}
{{- $rules := list -}}
{{- range (.Files.Get "files/app-rules.yaml" | fromYaml).rules -}}
{{- if and (or $.Values.namespaced.keda (not (has "keda.sh" .apiGroups))) (or $.Values.namespaced.argoRollouts (not (has "argoproj.io" .apiGroups))) -}}
{{- $rules = append $rules . -}}
{{- end -}}
{{- end -}}
{{- $rules | toYaml -}}
{{- end -}}
