{{/* Chart name, truncated to a DNS label. */}}
{{- define "traffik.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: a DNS-1035 label (<= 63 chars) for every object. */}}
{{- define "traffik.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "traffik.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "traffik.selectorLabels" -}}
app.kubernetes.io/name: {{ include "traffik.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "traffik.labels" -}}
helm.sh/chart: {{ include "traffik.chart" . }}
{{ include "traffik.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: rate-limiter
{{- end }}

{{- define "traffik.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "traffik.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "traffik.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where traffikd reads its configuration inside the pod (the image's default). */}}
{{- define "traffik.configPath" -}}/etc/traffik/traffik.yaml{{- end }}

{{/*
The traffikd config file: .Values.config plus the listen addresses, which follow
containerPorts. Keys are emitted as written in values (the config file's own names).
*/}}
{{- define "traffik.configYaml" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $_ := set $cfg "listen" (printf "0.0.0.0:%d" (int .Values.containerPorts.grpc)) }}
{{- if .Values.metrics.enabled }}
{{- $_ := set $cfg "metrics_listen" (printf "0.0.0.0:%d" (int .Values.containerPorts.metrics)) }}
{{- else }}
{{- $_ := set $cfg "metrics_listen" "" }}
{{- end }}
{{- include "traffik.envoyConfig" (dict "root" . "cfg" $cfg) }}
{{- toYaml $cfg }}
{{- end }}

{{/* The Secret that holds Redis passwords, or "" when no tenant names password_env. */}}
{{- define "traffik.redisSecretName" -}}
{{- if .Values.redisAuth.existingSecret }}
{{- .Values.redisAuth.existingSecret }}
{{- else if .Values.redisAuth.passwords }}
{{- printf "%s-redis" (include "traffik.fullname" .) }}
{{- end }}
{{- end }}

{{/* The environment variables named by tenants' redis.password_env, sorted and unique, one a line. */}}
{{- define "traffik.passwordEnvs" -}}
{{- $names := list }}
{{- range .Values.config.tenants }}
{{- if and .redis .redis.password_env }}
{{- $names = append $names .redis.password_env }}
{{- end }}
{{- end }}
{{- range ($names | uniq | sortAlpha) }}
{{ . }}
{{- end }}
{{- end }}

{{/* "true" when at least one tenant keeps its buckets in process memory. */}}
{{- define "traffik.hasMemoryTenant" -}}
{{- $found := false }}
{{- range .Values.config.tenants }}
{{- if eq (default "memory" .backend) "memory" }}{{ $found = true }}{{ end }}
{{- end }}
{{- if $found }}true{{ end }}
{{- end }}

{{/* The most pods this release may run at once. */}}
{{- define "traffik.maxReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ int .Values.autoscaling.maxReplicas }}{{ else }}{{ int .Values.replicaCount }}{{ end }}
{{- end }}

{{/*
Checks across values that values.schema.json cannot express; each failure names the
value to fix. Included once, from configmap.yaml.
*/}}
{{- define "traffik.validate" -}}
{{- $names := list }}
{{- range .Values.config.tenants }}
{{- if has .name $names }}
{{- fail (printf "config.tenants: tenant %q is defined twice" .name) }}
{{- end }}
{{- $names = append $names .name }}
{{- end }}
{{- $default := default "default" .Values.config.default_tenant }}
{{- if not (has $default $names) }}
{{- fail (printf "config.default_tenant %q names no tenant in config.tenants (have: %s); set config.default_tenant" $default (join ", " $names)) }}
{{- end }}
{{- if and .Values.metrics.enabled (eq (int .Values.containerPorts.grpc) (int .Values.containerPorts.metrics)) }}
{{- fail "containerPorts.grpc and containerPorts.metrics must differ" }}
{{- end }}
{{- if and .Values.metrics.enabled (eq (int .Values.service.ports.grpc) (int .Values.service.ports.metrics)) }}
{{- fail "service.ports.grpc and service.ports.metrics must differ" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set only one of maxUnavailable and minAvailable (set the other to null)" }}
{{- end }}
{{- if not .Values.redisAuth.existingSecret }}
{{- range splitList "\n" (include "traffik.passwordEnvs" . | trim) }}
{{- if and . (not (hasKey $.Values.redisAuth.passwords .)) }}
{{- fail (printf "a tenant's redis.password_env names %s: set redisAuth.passwords.%s, or redisAuth.existingSecret" . .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
