{{/*
Names, labels, images and the hardened securityContext: defined once, used by every template.
*/}}

{{- define "stainless.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "stainless.fullname" -}}
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

{{/* "<fullname>-<component>": call with (dict "root" $ "component" "inference"). */}}
{{- define "stainless.componentName" -}}
{{- printf "%s-%s" (include "stainless.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "stainless.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: (dict "root" $ "component" "inference"). */}}
{{- define "stainless.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stainless.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Common labels: (dict "root" $ "component" "inference"). */}}
{{- define "stainless.labels" -}}
helm.sh/chart: {{ include "stainless.chart" .root }}
{{ include "stainless.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: stainless
{{- end }}

{{/* Labels shared by every pod of this release (NetworkPolicy peers). */}}
{{- define "stainless.instanceLabels" -}}
app.kubernetes.io/name: {{ include "stainless.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
An image reference: (dict "root" $ "image" .Values.x.image "stainless" true).
global.imageRegistry replaces every registry (air-gapped mirrors); Stainless images
default to image.registry and image.tag (then the chart's appVersion).
*/}}
{{- define "stainless.image" -}}
{{- $root := .root }}
{{- $registry := .image.registry | default "" }}
{{- $tag := .image.tag | default "" }}
{{- if .stainless }}
{{- $registry = $registry | default $root.Values.image.registry }}
{{- $tag = $tag | default $root.Values.image.tag | default $root.Chart.AppVersion }}
{{- end }}
{{- if $root.Values.global.imageRegistry }}
{{- $registry = $root.Values.global.imageRegistry }}
{{- end }}
{{- if .image.digest }}
{{- printf "%s/%s@%s" $registry .image.repository .image.digest | trimPrefix "/" }}
{{- else }}
{{- printf "%s/%s:%s" $registry .image.repository $tag | trimPrefix "/" }}
{{- end }}
{{- end }}

{{/* A full image reference of the values, its registry replaced by global.imageRegistry:
(dict "root" $ "image" "quay.io/minio/mc:RELEASE…"). */}}
{{- define "stainless.mirrored" -}}
{{- if .root.Values.global.imageRegistry }}
{{- printf "%s/%s" .root.Values.global.imageRegistry (regexReplaceAll "^[^/]+\\.[^/]+/" .image "") }}
{{- else }}
{{- .image }}
{{- end }}
{{- end }}

{{- define "stainless.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The hardened pod securityContext, merged with a block's own securityContext.pod:
(dict "root" $ "override" .Values.x.securityContext).
*/}}
{{- define "stainless.podSecurityContext" -}}
{{- $base := dict "runAsNonRoot" true "runAsUser" 10001 "runAsGroup" 10001 "fsGroup" 10001 "seccompProfile" (dict "type" "RuntimeDefault") }}
{{- $override := (.override | default dict).pod | default dict }}
{{- toYaml (mergeOverwrite $base (deepCopy $override)) }}
{{- end }}

{{/* The hardened container securityContext, merged with .override.container. */}}
{{- define "stainless.containerSecurityContext" -}}
{{- $base := dict "allowPrivilegeEscalation" false "readOnlyRootFilesystem" true "runAsNonRoot" true "privileged" false "capabilities" (dict "drop" (list "ALL")) }}
{{- $override := (.override | default dict).container | default dict }}
{{- toYaml (mergeOverwrite $base (deepCopy $override)) }}
{{- end }}

{{/* A map of environment variables as a container env list. */}}
{{- define "stainless.envList" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{- define "stainless.configMapName" -}}
{{- printf "%s-settings" (include "stainless.fullname" .) }}
{{- end }}

{{/* The Secret of a workload: its own rendered one, or the user's existing one:
(dict "root" $ "workload" "ingestion"). */}}
{{- define "stainless.secretName" -}}
{{- .root.Values.secrets.existingSecret | default (printf "%s-%s-secrets" (include "stainless.fullname" .root) .workload) }}
{{- end }}

{{/*
The secret settings each workload reads, and nothing more: each gets a Secret of its own
with only these keys, and its pods name only them (tests/helm checks both). The task
queue's URLs only where tasks run on Redis.
*/}}
{{- define "stainless.secretKeys" -}}
{{- $db := list "STAINLESS_DATABASE__URL" }}
{{- $store := list "STAINLESS_STORE__ACCESS_KEY" "STAINLESS_STORE__SECRET_KEY" }}
{{- $tasks := ternary (list) (list "STAINLESS_TASKS__BROKER_URL" "STAINLESS_TASKS__RESULT_BACKEND") .Values.tasks.eager }}
{{- $bus := ternary (list "STAINLESS_BUS__SASL_PASSWORD") (list) (hasPrefix "SASL" .Values.bus.securityProtocol) }}
ingestion: {{ concat $db $store | toJson }}
registration: {{ concat $db $store $tasks $bus | toJson }}
relay: {{ concat $db $bus | toJson }}
notifier: {{ concat $db $bus (ternary (list "STAINLESS_NOTIFY__AUTHORIZATION") (list) (ne .Values.notifier.authorization "")) | toJson }}
worker: {{ concat $db $store $tasks | toJson }}
inference: {{ concat $db $store $bus | toJson }}
results: {{ concat $db $store | toJson }}
trainer: {{ concat $db $store $bus | toJson }}
migrations: {{ $db | toJson }}
training: {{ concat $db $store | toJson }}
triton: {{ $store | toJson }}
{{- end }}

{{/* A workload's secret settings as container env entries: (dict "root" $ "workload" "relay"). */}}
{{- define "stainless.secretEnv" -}}
{{- $name := include "stainless.secretName" . }}
{{- range (index (include "stainless.secretKeys" .root | fromYaml) .workload) }}
- name: {{ . }}
  valueFrom:
    secretKeyRef: {name: {{ $name }}, key: {{ . }}}
{{- end }}
{{- end }}

{{/* The settings that are secrets: never in a ConfigMap (tests/helm checks it). */}}
{{- define "stainless.secretSettings" -}}
- STAINLESS_DATABASE__URL
- STAINLESS_STORE__ACCESS_KEY
- STAINLESS_STORE__SECRET_KEY
- STAINLESS_TASKS__BROKER_URL
- STAINLESS_TASKS__RESULT_BACKEND
- STAINLESS_BUS__SASL_PASSWORD
- STAINLESS_NOTIFY__AUTHORIZATION
{{- end }}

{{- define "stainless.kafkaBootstrap" -}}
{{- if .Values.kafka.strimzi.enabled }}
{{- printf "%s-kafka-kafka-bootstrap:9092" (include "stainless.fullname" .) }}
{{- else }}
{{- .Values.kafka.bootstrapServers }}
{{- end }}
{{- end }}

{{/* host:port of the object store: the MinIO Tenant's service or the external endpoint. */}}
{{- define "stainless.storeEndpoint" -}}
{{- if .Values.objectStore.minio.enabled }}
{{- printf "%s-minio-hl:9000" (include "stainless.fullname" .) }}
{{- else }}
{{- .Values.objectStore.endpoint }}
{{- end }}
{{- end }}

{{- define "stainless.storeSecure" -}}
{{- if .Values.objectStore.minio.enabled }}false{{ else }}{{ .Values.objectStore.secure }}{{ end }}
{{- end }}

{{/* A value kept across upgrades: explicit value, else the live Secret's key, else random. */}}
{{- define "stainless.memo" -}}
{{- $cache := .root.Values._memo | default dict }}
{{- if not (hasKey $cache .key) }}
{{- $live := lookup "v1" "Secret" .root.Release.Namespace .secret }}
{{- $found := dig "data" .field "" ($live | default dict) | b64dec }}
{{- $_ := set $cache .key (.value | default $found | default (randAlphaNum 32)) }}
{{- $_ := set .root.Values "_memo" $cache }}
{{- end }}
{{- get $cache .key }}
{{- end }}

{{- define "stainless.postgresPassword" -}}
{{- include "stainless.memo" (dict "root" . "key" "postgres" "value" .Values.postgres.cnpg.password "secret" (printf "%s-postgres-app" (include "stainless.fullname" .)) "field" "password") }}
{{- end }}

{{/*
The object-store identity of a workload: (dict "root" $ "workload" "ingestion").
objectStore.credentials.<workload> when given; with the in-chart MinIO the user
"svc-<workload>" with a generated secret (the store-access Job creates it with the
workload's policy); else the shared objectStore.accessKey / secretKey.
*/}}
{{- define "stainless.workloadAccessKey" -}}
{{- $own := index (.root.Values.objectStore.credentials | default dict) .workload | default dict }}
{{- if $own.accessKey }}{{ $own.accessKey }}
{{- else if .root.Values.objectStore.minio.enabled }}{{ printf "svc-%s" .workload }}
{{- else }}{{ .root.Values.objectStore.accessKey }}{{ end }}
{{- end }}

{{- define "stainless.workloadSecretKey" -}}
{{- $own := index (.root.Values.objectStore.credentials | default dict) .workload | default dict }}
{{- if $own.secretKey }}{{ $own.secretKey }}
{{- else if .root.Values.objectStore.minio.enabled }}
{{- include "stainless.memo" (dict "root" .root "key" (printf "store-%s" .workload) "value" "" "secret" (include "stainless.secretName" .) "field" "STAINLESS_STORE__SECRET_KEY") }}
{{- else }}{{ .root.Values.objectStore.secretKey }}{{ end }}
{{- end }}

{{/* The workloads with an object-store identity of their own, as a YAML list. */}}
{{- define "stainless.storeWorkloads" -}}
{{- range $workload, $keys := include "stainless.secretKeys" . | fromYaml }}
{{- if and (has "STAINLESS_STORE__ACCESS_KEY" $keys) (include "stainless.workloadRuns" (dict "root" $ "workload" $workload)) }}
- {{ $workload }}
{{- end }}
{{- end }}
{{- end }}

{{/* The MinIO root user: only the Tenant and the store-access Job know it. */}}
{{- define "stainless.storeAccessKey" -}}
{{- if .Values.objectStore.minio.enabled }}
{{- .Values.objectStore.accessKey | default "stainless" }}
{{- else }}
{{- .Values.objectStore.accessKey }}
{{- end }}
{{- end }}

{{- define "stainless.storeSecretKey" -}}
{{- if .Values.objectStore.minio.enabled }}
{{- include "stainless.memo" (dict "root" . "key" "minio" "value" .Values.objectStore.secretKey "secret" (printf "%s-minio-env" (include "stainless.fullname" .)) "field" "secretKey") }}
{{- else }}
{{- .Values.objectStore.secretKey }}
{{- end }}
{{- end }}

{{- define "stainless.databaseUrl" -}}
{{- if .Values.postgres.cnpg.enabled }}
{{- $c := .Values.postgres.cnpg }}
{{- printf "postgresql+psycopg://%s:%s@%s-postgres-rw:5432/%s" $c.owner (include "stainless.postgresPassword" .) (include "stainless.fullname" .) $c.database }}
{{- else }}
{{- .Values.postgres.external.url }}
{{- end }}
{{- end }}

{{/* Triton's --model-repository: s3://bucket/prefix on AWS, s3://http(s)://host:port/bucket/prefix elsewhere. */}}
{{- define "stainless.tritonRepository" -}}
{{- $m := .Values.triton.modelRepository }}
{{- $bucket := $m.bucket | default .Values.objectStore.bucket }}
{{- $path := printf "%s/%s" $bucket ($m.prefix | trimAll "/") | trimSuffix "/" }}
{{- $endpoint := include "stainless.storeEndpoint" . }}
{{- if or .Values.objectStore.minio.enabled (not .Values.objectStore.aws) }}
{{- printf "s3://%s://%s/%s" (ternary "https" "http" (eq (include "stainless.storeSecure" .) "true")) $endpoint $path }}
{{- else }}
{{- printf "s3://%s" $path }}
{{- end }}
{{- end }}

{{/* Replicas of a Kafka consumer never exceed the topics' partitions (idle consumers). */}}
{{- define "stainless.maxConsumers" -}}
{{- min (int .scaling.maxReplicas) (int .root.Values.bus.partitions) }}
{{- end }}

{{/* Probes on /health/live and /health/ready of a service's port. */}}
{{- define "stainless.probes" -}}
{{- $p := .probes }}
startupProbe:
  httpGet: {path: /health/live, port: http}
  periodSeconds: 5
  failureThreshold: {{ $p.startupFailureThreshold }}
livenessProbe:
  httpGet: {path: /health/live, port: http}
  periodSeconds: {{ $p.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ $p.failureThreshold }}
readinessProbe:
  httpGet: {path: /health/ready, port: http}
  periodSeconds: {{ $p.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ $p.failureThreshold }}
{{- end }}
