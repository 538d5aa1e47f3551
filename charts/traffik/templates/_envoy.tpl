{{/*
Envoy's rate-limit service: the envoyproxy/ratelimit config files the chart mounts
(values `envoy.*`) and where traffikd's config names them.
*/}}

{{/* "true" when the chart mounts ratelimit config files (inline or an existing ConfigMap). */}}
{{- define "traffik.envoyFiles" -}}
{{- if or .Values.envoy.ratelimitConfig .Values.envoy.existingConfigMap }}true{{ end }}
{{- end }}

{{/* The ConfigMap holding the files: the existing one, or the chart's. */}}
{{- define "traffik.ratelimitConfigMapName" -}}
{{- if .Values.envoy.existingConfigMap }}{{ .Values.envoy.existingConfigMap }}
{{- else }}{{ printf "%s-ratelimit" (include "traffik.fullname" . | trunc 53 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{/*
Sets `envoy.config_dirs` in the config dict passed as .cfg to include the mount
path (kept once, after the directories the values list), when files are mounted.
*/}}
{{- define "traffik.envoyConfig" -}}
{{- if include "traffik.envoyFiles" .root }}
{{- $envoy := default dict (get .cfg "envoy") }}
{{- $dirs := default list (get $envoy "config_dirs") }}
{{- if not (has .root.Values.envoy.mountPath $dirs) }}
{{- $dirs = append $dirs .root.Values.envoy.mountPath }}
{{- end }}
{{- $_ := set $envoy "config_dirs" $dirs }}
{{- $_ := set .cfg "envoy" $envoy }}
{{- end }}
{{- end }}

{{/* Checks of the envoy values; each failure names the value to fix. */}}
{{- define "traffik.envoyValidate" -}}
{{- if and .Values.envoy.ratelimitConfig .Values.envoy.existingConfigMap }}
{{- fail "envoy: set only one of envoy.ratelimitConfig and envoy.existingConfigMap" }}
{{- end }}
{{- $mount := trimSuffix "/" .Values.envoy.mountPath }}
{{- if or (eq $mount "/etc/traffik") (hasPrefix "/etc/traffik/" $mount) }}
{{- fail (printf "envoy.mountPath %q is inside /etc/traffik, where the chart mounts traffik.yaml; choose another directory" .Values.envoy.mountPath) }}
{{- end }}
{{- end }}
