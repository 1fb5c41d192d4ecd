{{/* Chart name, truncated to the 63 characters Kubernetes allows in names and labels. */}}
{{- define "llmsoup.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; the release name alone when it already contains the chart name. */}}
{{- define "llmsoup.fullname" -}}
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

{{- define "llmsoup.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llmsoup.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "llmsoup.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "llmsoup.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* ConfigMap holding llmsoup.yaml. */}}
{{- define "llmsoup.configMapName" -}}
{{- .Values.existingConfigMap | default (include "llmsoup.fullname" .) }}
{{- end }}

{{/* Whether the gRPC port requires the shared secret (grpcAuth.enabled: auto → unless Envoy Gateway). */}}
{{- define "llmsoup.grpcAuth" -}}
{{- $v := toString .Values.grpcAuth.enabled }}
{{- if eq $v "auto" }}
{{- if not .Values.envoyGateway.enabled }}true{{ end }}
{{- else if eq $v "true" }}
{{- if .Values.envoyGateway.enabled }}
{{- fail "grpcAuth.enabled=true with envoyGateway.enabled: Envoy Gateway's EnvoyExtensionPolicy cannot send gRPC metadata, so every call would be refused; use grpcAuth.enabled=auto (the NetworkPolicy guards the port)" }}
{{- end }}true
{{- end }}
{{- end }}

{{/* Secret holding the gRPC token. */}}
{{- define "llmsoup.grpcSecretName" -}}
{{- .Values.grpcAuth.existingSecret | default (printf "%s-grpc" (include "llmsoup.fullname" .)) }}
{{- end }}

{{/* The admin listen address: config.server.admin_listen when set, else every interface on admin.port. */}}
{{- define "llmsoup.adminListen" -}}
{{- $server := .Values.config.server | default dict }}
{{- if hasKey $server "admin_listen" }}
{{- $server.admin_listen }}
{{- else if .Values.admin.enabled }}
{{- printf "0.0.0.0:%v" .Values.admin.port }}
{{- end }}
{{- end }}

{{/* The admin port number (empty when the admin listener is off). */}}
{{- define "llmsoup.adminPort" -}}
{{- $listen := include "llmsoup.adminListen" . }}
{{- if $listen }}{{ splitList ":" $listen | last }}{{ end }}
{{- end }}

{{/* The chart's Redis pods: their own name label, so no selector of the sidecar's matches them. */}}
{{- define "llmsoup.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-redis" (include "llmsoup.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{/* Redis of the chart (redis.enabled). */}}
{{- define "llmsoup.redisName" -}}
{{- printf "%s-redis" (include "llmsoup.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The llmsoup config from `config`, with what the chart must own merged in (never replacing a map
the user set): server.grpc_listen is the Service port, server.grpc_token the Secret's token, and
server.admin_listen defaults to every interface so Prometheus can scrape it; with redis.enabled,
budgets.store.redis_url defaults to the chart's Redis.
*/}}
{{- define "llmsoup.config" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $server := deepCopy ($cfg.server | default dict) }}
{{- $_ := set $server "grpc_listen" (printf "0.0.0.0:%v" .Values.service.port) }}
{{- if not (hasKey $server "admin_listen") }}
{{- if .Values.admin.enabled }}
{{- $_ := set $server "admin_listen" (printf "0.0.0.0:%v" .Values.admin.port) }}
{{- else }}
{{- $_ := set $server "admin_listen" nil }}
{{- end }}
{{- end }}
{{- if include "llmsoup.grpcAuth" . }}
{{- $_ := set $server "grpc_token" "${LLMSOUP_GRPC_TOKEN}" }}
{{- end }}
{{- $_ := set $cfg "server" $server }}
{{- if .Values.redis.enabled }}
{{- $budgets := deepCopy ($cfg.budgets | default dict) }}
{{- if not (hasKey $budgets "store") }}
{{- $_ := set $budgets "store" (dict "redis_url" (printf "redis://%s:%v" (include "llmsoup.redisName" .) .Values.redis.port)) }}
{{- end }}
{{- $_ := set $cfg "budgets" $budgets }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}
