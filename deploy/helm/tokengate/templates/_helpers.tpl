{{/* The chart's name, or nameOverride. */}}
{{- define "tokengate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The objects' name: fullnameOverride, else the release name when it already
contains the chart's name (release "tokengate" → "tokengate"), else
RELEASE-tokengate.
*/}}
{{- define "tokengate.fullname" -}}
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

{{/* Labels that select the pods; never change them on upgrade. */}}
{{- define "tokengate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokengate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tokengate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tokengate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tokengate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where the config file and the TLS files are mounted. */}}
{{- define "tokengate.configDir" -}}/etc/tokengate{{- end }}
{{- define "tokengate.tlsDir" -}}/etc/tokengate-tls{{- end }}

{{/* Environment variables the config names. */}}
{{- define "tokengate.adminTokenEnv" -}}TOKENGATE_ADMIN_TOKEN{{- end }}
{{- define "tokengate.redisPasswordEnv" -}}REDIS_PASSWORD{{- end }}
{{- define "tokengate.keySaltEnv" -}}TOKENGATE_KEY_SALT{{- end }}

{{/*
tokengate's configuration: .Values.config with the keys the chart owns set
from the other values.
*/}}
{{- define "tokengate.config" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $_ := set $cfg "listen" (printf "0.0.0.0:%d" (int .Values.ports.grpc)) }}
{{- /* Every interface of the pod, for Prometheus and the kubelet. */}}
{{- $_ := set $cfg "admin_listen" (printf "0.0.0.0:%d" (int .Values.ports.admin)) }}
{{- $admin := default (dict) (get $cfg "admin") }}
{{- $_ := set $admin "token_env" (include "tokengate.adminTokenEnv" .) }}
{{- $_ := set $cfg "admin" $admin }}
{{- if .Values.secrets.keySalt.name }}
{{- $_ := set $cfg "key_salt_env" (include "tokengate.keySaltEnv" .) }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- $tls := dict "cert_file" (printf "%s/tls.crt" (include "tokengate.tlsDir" .)) "key_file" (printf "%s/tls.key" (include "tokengate.tlsDir" .)) }}
{{- if .Values.tls.clientCA }}
{{- $_ := set $tls "client_ca_file" (printf "%s/ca.crt" (include "tokengate.tlsDir" .)) }}
{{- end }}
{{- $_ := set $cfg "tls" $tls }}
{{- end }}
{{- $store := default (dict) (get $cfg "store") }}
{{- if eq (toString (get $store "backend")) "redis" }}
{{- $redis := default (dict) (get $store "redis") }}
{{- $_ := set $redis "password_env" (include "tokengate.redisPasswordEnv" .) }}
{{- $_ := set $store "redis" $redis }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* Several replicas need a shared store. */}}
{{- define "tokengate.checkStore" -}}
{{- $backend := toString (default "bbolt" (dig "store" "backend" "" .Values.config)) }}
{{- $several := or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled }}
{{- if and $several (ne $backend "redis") (not .Values.allowPerReplicaBudgets) }}
{{- fail (printf "tokengate: %s store with several replicas (replicaCount %v, autoscaling %v): each replica would keep its own budget and N replicas admit N times it. Set config.store.backend: redis, or allowPerReplicaBudgets: true" $backend .Values.replicaCount .Values.autoscaling.enabled) }}
{{- end }}
{{- if eq $backend "bbolt" }}
{{- fail "tokengate: the bbolt store needs a writable disk, and the chart mounts none (read-only root filesystem): use memory or redis" }}
{{- end }}
{{- end }}
