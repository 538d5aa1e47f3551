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
{{- if .Values.tls.enabled }}
{{- $tls := dict "cert_file" (include "traffik.tlsCertFile" .) "key_file" (include "traffik.tlsKeyFile" .) }}
{{- if .Values.tls.clientCA.enabled }}
{{- $_ := set $tls "client_ca_file" (include "traffik.clientCAFile" .) }}
{{- end }}
{{- if .Values.tls.requireClientCert }}
{{- $_ := set $tls "require_client_cert" true }}
{{- end }}
{{- $_ := set $cfg "tls" $tls }}
{{- end }}
{{- $auth := include "traffik.auth" . }}
{{- if or (ne $auth "off") .Values.callers }}
{{- $_ := set $cfg "auth" $auth }}
{{- end }}
{{- if .Values.callers }}
{{- $callers := list }}
{{- range .Values.callers }}
{{- $c := dict "name" .name "tenants" .tenants }}
{{- if hasKey . "admin" }}{{ $_ := set $c "admin" .admin }}{{ end }}
{{- if .api_key_secret }}{{ $_ := set $c "api_key_file" (include "traffik.callerKeyFile" .name) }}{{ end }}
{{- if .api_key_sha256 }}{{ $_ := set $c "api_key_sha256" .api_key_sha256 }}{{ end }}
{{- if .mtls_identity }}{{ $_ := set $c "mtls_identity" .mtls_identity }}{{ end }}
{{- $callers = append $callers $c }}
{{- end }}
{{- $_ := set $cfg "callers" $callers }}
{{- end }}
{{- if .Values.envoy.enabled }}
{{- $envoy := dict "config_dirs" (list (include "traffik.envoyRulesDir" .)) "response_headers" .Values.envoy.response_headers }}
{{- with .Values.envoy.tenant_for_domain }}{{ $_ := set $envoy "tenant_for_domain" . }}{{ end }}
{{- $_ := set $cfg "envoy" $envoy }}
{{- end }}
{{- toYaml $cfg }}
{{- if and .Values.envoy.enabled .Values.envoy.ratelimitConfig }}
# The rule files' SHA-256: a change of envoy.ratelimitConfig changes this file too,
# so traffikd's reload (which re-reads config_dirs) follows it.
# envoy.ratelimitConfig sha256: {{ toJson .Values.envoy.ratelimitConfig | sha256sum }}
{{- end }}
{{- end }}

{{/* auth as traffikd spells it: "off" (also for a YAML 1.1 bare off, read as false) or "required". */}}
{{- define "traffik.auth" -}}
{{- $a := toString .Values.auth }}
{{- if eq $a "false" }}off{{ else }}{{ $a }}{{ end }}
{{- end }}

{{/*
Where the pod sees the files traffikd reads. Secrets are mounted as directories (never
subPath), so the kubelet's updates (certificate renewals) reach the running pod.
*/}}
{{- define "traffik.tlsDir" -}}/run/traffik/tls{{- end }}
{{- define "traffik.tlsSecretName" -}}
{{- if .Values.tls.secretName }}{{ .Values.tls.secretName }}{{ else }}{{ printf "%s-tls" (include "traffik.fullname" .) }}{{ end }}
{{- end }}
{{- define "traffik.tlsCertFile" -}}{{ include "traffik.tlsDir" . }}/tls.crt{{- end }}
{{- define "traffik.tlsKeyFile" -}}{{ include "traffik.tlsDir" . }}/tls.key{{- end }}
{{- define "traffik.clientCAFile" -}}
{{- if .Values.tls.clientCA.secretName }}/run/traffik/client-ca/{{ .Values.tls.clientCA.key }}
{{- else }}{{ include "traffik.tlsDir" . }}/{{ .Values.tls.clientCA.key }}{{ end }}
{{- end }}
{{- define "traffik.probeCAFile" -}}
{{- if .Values.tls.probe.caSecretName }}/run/traffik/probe-ca/{{ .Values.tls.probe.caKey }}
{{- else }}{{ include "traffik.tlsDir" . }}/{{ .Values.tls.probe.caKey }}{{ end }}
{{- end }}
{{- define "traffik.probeClientDir" -}}
{{- if .Values.tls.probe.clientCertSecretName }}/run/traffik/probe-client{{ else }}{{ include "traffik.tlsDir" . }}{{ end }}
{{- end }}
{{- define "traffik.probeServerName" -}}
{{- default (printf "%s.%s.svc" (include "traffik.fullname" .) .Release.Namespace) .Values.tls.probe.serverName }}
{{- end }}
{{/* The keys of the TLS Secret the pod needs, one a line. */}}
{{- define "traffik.tlsSecretKeys" -}}
{{- $keys := list "tls.crt" "tls.key" }}
{{- if and .Values.tls.clientCA.enabled (not .Values.tls.clientCA.secretName) }}{{ $keys = append $keys .Values.tls.clientCA.key }}{{ end }}
{{- if not .Values.tls.probe.caSecretName }}{{ $keys = append $keys .Values.tls.probe.caKey }}{{ end }}
{{- range ($keys | uniq) }}
{{ . }}
{{- end }}
{{- end }}
{{- define "traffik.callerKeyFile" -}}/run/traffik/callers/{{ . }}/api-key{{- end }}
{{- define "traffik.envoyRulesDir" -}}
{{- if .Values.envoy.existingConfigMap }}{{ .Values.envoy.existingConfigMapMountPath }}{{ else }}/etc/traffik/ratelimit{{ end }}
{{- end }}

{{/*
A probe handler (args: root, service): the kubelet's native gRPC probe, or with TLS
on (which native gRPC probes cannot speak) traffikd's own health client run in the
container, verifying the server certificate and, when client certificates are
required, presenting one.
*/}}
{{- define "traffik.probeHandler" -}}
{{- $v := .root.Values }}
{{- if $v.tls.enabled }}
exec:
  command:
    - /usr/local/bin/traffikd
    - --health-check
    - {{ printf "127.0.0.1:%d" (int $v.containerPorts.grpc) | quote }}
    {{- with .service }}
    - --health-service
    - {{ . | quote }}
    {{- end }}
    - --tls-ca
    - {{ include "traffik.probeCAFile" .root }}
    - --tls-server-name
    - {{ include "traffik.probeServerName" .root }}
    {{- if $v.tls.requireClientCert }}
    - --tls-cert
    - {{ include "traffik.probeClientDir" .root }}/tls.crt
    - --tls-key
    - {{ include "traffik.probeClientDir" .root }}/tls.key
    {{- end }}
{{- else }}
grpc:
  port: {{ $v.containerPorts.grpc }}
  service: {{ .service | quote }}
{{- end }}
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
{{- with .Values.tls }}
{{- if and .certManager.enabled (not .enabled) }}
{{- fail "tls.certManager.enabled needs tls.enabled: true" }}
{{- end }}
{{- if and .enabled (not .secretName) (not .certManager.enabled) }}
{{- fail "tls.enabled: set tls.secretName to an existing kubernetes.io/tls Secret, or tls.certManager.enabled: true" }}
{{- end }}
{{- if and .certManager.enabled (not .certManager.issuerRef.name) }}
{{- fail "tls.certManager.issuerRef.name: name the Issuer or ClusterIssuer that signs the certificate" }}
{{- end }}
{{- if and .clientCA.enabled (not .enabled) }}
{{- fail "tls.clientCA.enabled needs tls.enabled: true" }}
{{- end }}
{{- if and .requireClientCert (not .clientCA.enabled) }}
{{- fail "tls.requireClientCert needs tls.clientCA.enabled: true (the CA client certificates are checked against)" }}
{{- end }}
{{- end }}
{{- if and .Values.networkPolicy.enabled (not .Values.networkPolicy.clientNamespaceLabels) }}
{{- fail "networkPolicy.clientNamespaceLabels: name at least one label of the client namespaces (empty would admit every namespace)" }}
{{- end }}
{{- if and .Values.networkPolicy.enabled .Values.metrics.enabled (not .Values.networkPolicy.metricsNamespaceLabels) }}
{{- fail "networkPolicy.metricsNamespaceLabels: name at least one label of the monitoring namespace (empty would admit every namespace)" }}
{{- end }}
{{- if .Values.envoy.enabled }}
{{- $mp := trimSuffix "/" .Values.envoy.existingConfigMapMountPath }}
{{- range (list "/etc/traffik" "/run/traffik") }}
{{- if or (eq $mp .) (hasPrefix (printf "%s/" .) $mp) (hasPrefix (printf "%s/" $mp) .) }}
{{- fail (printf "envoy.existingConfigMapMountPath %s overlaps %s, where the chart mounts traffikd's config and secrets" $mp .) }}
{{- end }}
{{- end }}
{{- end }}
{{- $secretFiles := false }}
{{- range .Values.callers }}{{ if .api_key_secret }}{{ $secretFiles = true }}{{ end }}{{ end }}
{{- if and (or .Values.tls.enabled $secretFiles) (not .Values.podSecurityContext.fsGroup) }}
{{- fail "podSecurityContext.fsGroup: set it (default 10001): the mounted TLS and API key Secrets are readable by owner and group only (mode 0440)" }}
{{- end }}
{{- $auth := include "traffik.auth" . }}
{{- if and (eq $auth "required") (not .Values.callers) }}
{{- fail "auth: required needs at least one entry in callers" }}
{{- end }}
{{- $callerNames := list }}
{{- range $i, $c := .Values.callers }}
{{- $creds := 0 }}
{{- range (list "api_key_secret" "api_key_sha256" "mtls_identity") }}{{ if get $c . }}{{ $creds = add1 $creds }}{{ end }}{{ end }}
{{- if ne (int $creds) 1 }}
{{- fail (printf "callers[%d] (%s): set exactly one of api_key_secret, api_key_sha256, mtls_identity" $i $c.name) }}
{{- end }}
{{- if has $c.name $callerNames }}
{{- fail (printf "callers: caller %q is defined twice" $c.name) }}
{{- end }}
{{- $callerNames = append $callerNames $c.name }}
{{- if and $c.mtls_identity (not $.Values.tls.clientCA.enabled) }}
{{- fail (printf "callers[%d] (%s): mtls_identity needs tls.enabled and tls.clientCA.enabled (client certificates)" $i $c.name) }}
{{- end }}
{{- if kindIs "slice" $c.tenants }}
{{- range $c.tenants }}
{{- if not (has . $names) }}
{{- fail (printf "callers[%d] (%s): tenant %q is not in config.tenants" $i $c.name .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.envoy }}
{{- if .enabled }}
{{- if eq (empty .ratelimitConfig) (empty .existingConfigMap) }}
{{- fail "envoy.enabled: set exactly one of envoy.ratelimitConfig (the files) and envoy.existingConfigMap" }}
{{- end }}
{{- $tfd := .tenant_for_domain }}
{{- $tenants := list }}
{{- if kindIs "map" $tfd }}{{ $tenants = values $tfd }}{{ else if $tfd }}{{ $tenants = list $tfd }}{{ end }}
{{- range $tenants }}
{{- if not (has . $names) }}
{{- fail (printf "envoy.tenant_for_domain names tenant %q, which is not in config.tenants" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if not .Values.redisAuth.existingSecret }}
{{- range splitList "\n" (include "traffik.passwordEnvs" . | trim) }}
{{- if and . (not (hasKey $.Values.redisAuth.passwords .)) }}
{{- fail (printf "a tenant's redis.password_env names %s: set redisAuth.passwords.%s, or redisAuth.existingSecret" . .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
