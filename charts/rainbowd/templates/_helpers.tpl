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

{{/* A shard's objects' name (its Deployment, Service and Lease): the release's name for a shard
without a name (the default, one rainbowd for the whole cluster), else <fullname>-<shard>.
Called with (dict "root" $ "shard" .). */}}
{{- define "rainbowd.shardName" -}}
{{- $fullname := include "rainbowd.fullname" .root -}}
{{- if .shard.name -}}
{{- printf "%s-%s" $fullname .shard.name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $fullname -}}
{{- end -}}
{{- end -}}

{{/* A named shard's pods carry its name, so its Deployment and Service select only them. */}}
{{- define "rainbowd.shardLabel" -}}
{{- with .name -}}
rainbowd.io/shard: {{ . }}
{{- end -}}
{{- end -}}

{{/* The namespaces a shard manages: its own list, else namespaced.namespaces in namespaced
mode; none (every namespace) otherwise. Called with (dict "root" $ "shard" .), returns JSON. */}}
{{- define "rainbowd.shardNamespaces" -}}
{{- $own := .shard.namespaces | default list -}}
{{- if and (not $own) .root.Values.namespaced.enabled -}}
{{- $own = .root.Values.namespaced.namespaces | default list -}}
{{- end -}}
{{- toJson $own -}}
{{- end -}}

{{/* The `key=value` (or `key==value`) terms of a label selector, as a JSON object: what
proves two selectors disjoint (the same key, different values). Other terms prove nothing. */}}
{{- define "rainbowd.equalities" -}}
{{- $out := dict -}}
{{- range splitList "," (. | default "") -}}
{{- $term := trim . -}}
{{- if regexMatch "^[A-Za-z0-9./_-]+\\s*==?\\s*[A-Za-z0-9._-]*$" $term -}}
{{- $kv := regexSplit "\\s*==?\\s*" $term 2 -}}
{{- $_ := set $out (index $kv 0) (index $kv 1) -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* "true" when no Deployment can match both selectors (.a and .b), as far as their equality
terms prove it; empty otherwise. */}}
{{- define "rainbowd.selectorsDisjoint" -}}
{{- $a := include "rainbowd.equalities" .a | fromJson -}}
{{- $b := include "rainbowd.equalities" .b | fromJson -}}
{{- $found := false -}}
{{- range $key, $value := $a -}}
{{- if and (hasKey $b $key) (ne (index $b $key) $value) -}}
{{- $found = true -}}
{{- end -}}
{{- end -}}
{{- if $found }}true{{ end -}}
{{- end -}}

{{/* The shards checked before anything is rendered: at least one; several each named, names
unique; namespaces DNS labels (in namespaced mode, among namespaced.namespaces); no two shards
managing one Deployment, i.e. sharing a namespace (a shard without namespaces has them all)
unless their selectors are provably disjoint. Two rainbowds acting on the same colors would
each spend the disruption budget and race each other's stamps. */}}
{{- define "rainbowd.checkShards" -}}
{{- $shards := .Values.shards -}}
{{- if not (kindIs "slice" $shards) -}}
{{- fail (printf "shards: expected a list of {name, namespaces, selector}, got %v" $shards) -}}
{{- end -}}
{{- if not $shards -}}
{{- fail "shards: the list is empty: give at least one shard (the default is one, managing every namespace)" -}}
{{- end -}}
{{- $several := gt (len $shards) 1 -}}
{{- range $i, $s := $shards -}}
{{- $where := printf "shards[%d]" $i -}}
{{- if not (kindIs "map" $s) -}}
{{- fail (printf "%s: expected a mapping with name, namespaces and selector, got %v" $where $s) -}}
{{- end -}}
{{- range $key, $_ := $s -}}
{{- if not (has $key (list "name" "namespaces" "selector")) -}}
{{- fail (printf "%s.%s: unknown key (a shard has name, namespaces and selector)" $where $key) -}}
{{- end -}}
{{- end -}}
{{- $name := $s.name | default "" -}}
{{- if and $several (not $name) -}}
{{- fail (printf "%s.name: missing: with several shards each needs a name (its Deployment, Service and Lease are named after it)" $where) -}}
{{- end -}}
{{- if and $name (not (regexMatch "^[a-z0-9]([-a-z0-9]{0,28}[a-z0-9])?$" (toString $name))) -}}
{{- fail (printf "%s.name: %q is not a name of at most 30 lowercase letters, digits and -" $where (toString $name)) -}}
{{- end -}}
{{- if not (kindIs "slice" ($s.namespaces | default list)) -}}
{{- fail (printf "%s.namespaces: expected a list of namespace names, got %v" $where $s.namespaces) -}}
{{- end -}}
{{- range ($s.namespaces | default list) -}}
{{- if not (kindIs "string" .) -}}
{{- fail (printf "%s.namespaces: %v is a %s, not a namespace name (YAML reads y, no, on... as booleans: quote it)" $where . (kindOf .)) -}}
{{- end -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" .) -}}
{{- fail (printf "%s.namespaces: %q is not a namespace name" $where .) -}}
{{- end -}}
{{- if and $.Values.namespaced.enabled (not (has . ($.Values.namespaced.namespaces | default list))) -}}
{{- fail (printf "%s.namespaces: %q is not in namespaced.namespaces, so rainbowd has no Role there" $where .) -}}
{{- end -}}
{{- end -}}
{{- $mine := include "rainbowd.shardNamespaces" (dict "root" $ "shard" $s) | fromJsonArray -}}
{{- range $j, $t := $shards -}}
{{- if lt $j $i -}}
{{- if and $name (eq $name ($t.name | default "")) -}}
{{- fail (printf "%s.name: %q is also the name of shards[%d]: each shard needs its own Lease" $where $name $j) -}}
{{- end -}}
{{- $theirs := include "rainbowd.shardNamespaces" (dict "root" $ "shard" $t) | fromJsonArray -}}
{{- $shared := "" -}}
{{- if not $mine -}}
{{- $shared = "every namespace (it lists none)" -}}
{{- else if not $theirs -}}
{{- $shared = printf "every namespace (shards[%d] lists none)" $j -}}
{{- else -}}
{{- range $ns := $mine -}}
{{- if and (not $shared) (has $ns $theirs) -}}
{{- $shared = printf "namespace %s" $ns -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and $shared (not (include "rainbowd.selectorsDisjoint" (dict "a" $s.selector "b" $t.selector))) -}}
{{- fail (printf "%s overlaps shards[%d] in %s: shards must not share a namespace unless their selectors name one label with different values (e.g. tier=chat and tier=web), or two rainbowds act on the same colors" $where $j $shared) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The shards every template ranges over, checked first (rainbowd.checkShards), as JSON. */}}
{{- define "rainbowd.shards" -}}
{{- include "rainbowd.checkShards" . -}}
{{- toJson .Values.shards -}}
{{- end -}}
