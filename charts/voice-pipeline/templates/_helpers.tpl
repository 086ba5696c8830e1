{{- define "voice-pipeline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "voice-pipeline.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "voice-pipeline.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "voice-pipeline.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "voice-pipeline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "voice-pipeline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "voice-pipeline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "voice-pipeline.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "voice-pipeline.pipelineName" -}}
{{- default (include "voice-pipeline.fullname" .) .Values.pipeline.name -}}
{{- end -}}

{{- define "voice-pipeline.redisUrl" -}}
{{- if .Values.redis.external.url -}}
{{- .Values.redis.external.url -}}
{{- else if .Values.redis.enabled -}}
{{- printf "redis://%s-redis:6379/0" (include "voice-pipeline.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Alert rules, shared by the PrometheusRule and the rules ConfigMap (checked by promtool). */}}
{{- define "voice-pipeline.alertGroups" -}}
{{- $r := .Values.monitoring.rules -}}
groups:
  - name: voice-pipeline
    rules:
      - alert: VoicePipelineMemoryHigh
        expr: max by (namespace, pod, container) (container_memory_working_set_bytes{container=~"gateway|vad|asr|llm|tts"} / on (namespace, pod, container) container_spec_memory_limit_bytes{container=~"gateway|vad|asr|llm|tts"} > 0) > {{ $r.memoryRatio }}
        for: {{ $r.for }}
        labels: {severity: warning}
        annotations:
          summary: "{{ "{{ $labels.container }}" }} memory above {{ mulf $r.memoryRatio 100 }}% of its limit"
      - alert: VoicePipelineCpuHigh
        expr: sum by (namespace, pod, container) (rate(container_cpu_usage_seconds_total{container=~"gateway|vad|asr|llm|tts"}[5m])) / sum by (namespace, pod, container) (container_spec_cpu_quota{container=~"gateway|vad|asr|llm|tts"} / container_spec_cpu_period{container=~"gateway|vad|asr|llm|tts"}) > {{ $r.cpuRatio }}
        for: {{ $r.for }}
        labels: {severity: warning}
        annotations:
          summary: "{{ "{{ $labels.container }}" }} CPU above {{ mulf $r.cpuRatio 100 }}% of its limit"
      - alert: VoicePipelineAsrSlow
        expr: histogram_quantile(0.95, sum by (le) (rate(voice_stage_latency_seconds_bucket{stage="asr"}[5m]))) > {{ $r.asrP95Seconds }}
        for: {{ $r.for }}
        labels: {severity: warning}
        annotations:
          summary: "ASR p95 latency above {{ $r.asrP95Seconds }} s"
      - alert: VoicePipelineErrors
        expr: sum by (stage) (rate(voice_stage_requests_total{outcome=~"error|overload"}[5m])) / sum by (stage) (rate(voice_stage_requests_total[5m])) > {{ $r.errorRatio }}
        for: {{ $r.for }}
        labels: {severity: critical}
        annotations:
          summary: "stage {{ "{{ $labels.stage }}" }} error ratio above {{ mulf $r.errorRatio 100 }}%"
      - alert: VoicePipelineCacheCold
        expr: sum by (stage) (rate(voice_cache_requests_total{result="hit"}[15m])) / sum by (stage) (rate(voice_cache_requests_total{result=~"hit|miss"}[15m])) < {{ $r.cacheHitRatio }}
        for: {{ $r.for }}
        labels: {severity: info}
        annotations:
          summary: "stage {{ "{{ $labels.stage }}" }} cache hit ratio below {{ mulf $r.cacheHitRatio 100 }}%"
{{- end -}}

{{/* A memory quantity in Mi/Gi as whole mebibytes. */}}
{{- define "voice-pipeline.mebibytes" -}}
{{- $v := toString . -}}
{{- if hasSuffix "Gi" $v -}}{{- mul (trimSuffix "Gi" $v | int) 1024 -}}
{{- else if hasSuffix "Mi" $v -}}{{- trimSuffix "Mi" $v | int -}}
{{- else -}}{{- fail (printf "redis.memory must be in Mi or Gi, got %s" $v) -}}
{{- end -}}
{{- end -}}

{{/* Annotations of the pre-delete cleanup hook's objects; the argument is the hook weight. */}}
{{- define "voice-pipeline.cleanupHook" -}}
helm.sh/hook: pre-delete
helm.sh/hook-weight: {{ . | quote }}
# hook-failed too: a hook that could not run (image not pullable, no node) leaves nothing behind.
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded,hook-failed
{{- end -}}

{{/* The KopfPeering object the operator replicas share for leader election. */}}
{{- define "voice-pipeline.peeringName" -}}
{{- default (include "voice-pipeline.fullname" .) .Values.operator.leaderElection.peeringName -}}
{{- end -}}

{{/* Operator replicas: as asked with leader election, exactly one without (kopf --standalone). */}}
{{- define "voice-pipeline.operatorReplicas" -}}
{{- if .Values.operator.leaderElection.enabled -}}{{ .Values.operator.replicas }}{{- else -}}1{{- end -}}
{{- end -}}
