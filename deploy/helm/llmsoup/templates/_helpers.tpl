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

{{/* The llmsoup config with the listen address forced to the Service port, so the two cannot drift. */}}
{{- define "llmsoup.config" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $server := dict "grpc_listen" (printf "0.0.0.0:%v" .Values.service.port) }}
{{- if include "llmsoup.grpcAuth" . }}
{{- $_ := set $server "grpc_token" "${LLMSOUP_GRPC_TOKEN}" }}
{{- end }}
{{- $_ := set $cfg "server" $server }}
{{- toYaml $cfg }}
{{- end }}
