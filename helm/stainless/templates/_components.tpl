{{/*
The Stainless services, one Deployment each: name -> the setting of its port and what it is.
api: reachable by clients (ingestion, results), its /metrics on a port of its own; consumer: a Kafka consumer group scaled on lag.
The trainer (training image) submits each requested training job as a KubeRay RayJob.
*/}}
{{- define "stainless.components" -}}
ingestion: {portSetting: STAINLESS_INGESTION__HTTP_PORT, metricsPortSetting: STAINLESS_INGESTION__METRICS_PORT, api: true}
registration: {portSetting: STAINLESS_REGISTRATION__HTTP_PORT, consumer: true}
relay: {portSetting: STAINLESS_RELAY__HTTP_PORT}
notifier: {portSetting: STAINLESS_NOTIFY__HTTP_PORT, command: stainless-notifier}
worker: {portSetting: STAINLESS_WORKER__METRICS_PORT}
inference: {portSetting: STAINLESS_INFERENCE__HTTP_PORT, consumer: true}
results: {portSetting: STAINLESS_RESULTS__HTTP_PORT, metricsPortSetting: STAINLESS_RESULTS__METRICS_PORT, api: true}
trainer: {portSetting: STAINLESS_RAY__HTTP_PORT}
{{- end }}

{{/* Whether a component runs: (dict "root" $ "name" "worker"). */}}
{{- define "stainless.enabled" -}}
{{- $values := index .root.Values .name }}
{{- if and (eq .name "trainer") $values.enabled (not .root.Values.training.rayJob.enabled) }}
{{- fail "trainer.enabled needs training.rayJob.enabled: the trainer submits the RayJob template" }}
{{- end }}
{{- if and $values.enabled (not (and (eq .name "worker") .root.Values.tasks.eager)) }}true{{ end }}
{{- end }}

{{/* Whether a workload with a Secret runs: a service, or the migrations, training or Triton
(dict "root" $ "workload" "training"). */}}
{{- define "stainless.workloadRuns" -}}
{{- $running := dict
  "migrations" .root.Values.migrations.enabled
  "training" .root.Values.training.rayJob.enabled
  "triton" .root.Values.triton.enabled }}
{{- if hasKey $running .workload }}{{ if index $running .workload }}true{{ end }}
{{- else }}{{ include "stainless.enabled" (dict "root" .root "name" .workload) }}{{ end }}
{{- end }}
