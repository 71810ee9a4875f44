{{/* Names ------------------------------------------------------------------ */}}

{{- define "cryptovol.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name prefix: the release name, plus the chart name unless it already contains it. */}}
{{- define "cryptovol.fullname" -}}
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

{{/* Name of a component's objects: "<fullname>-<component>". Call with (list $ "api"). */}}
{{- define "cryptovol.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "cryptovol.fullname" $root) (index . 1) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cryptovol.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels ----------------------------------------------------------------- */}}

{{- define "cryptovol.labels" -}}
helm.sh/chart: {{ include "cryptovol.chart" . }}
app.kubernetes.io/name: {{ include "cryptovol.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cryptovol
{{- end -}}

{{/* Labels of the Strimzi Kafka objects. The operator copies them to the Kafka pods, so
they leave out name/instance: the release's NetworkPolicies must not select those pods. */}}
{{- define "cryptovol.operatorLabels" -}}
helm.sh/chart: {{ include "cryptovol.chart" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels of a component. Call with (list $ "api"). */}}
{{- define "cryptovol.componentLabels" -}}
{{ include "cryptovol.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Selector labels of a component. Call with (list $ "api"). */}}
{{- define "cryptovol.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "cryptovol.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Monitoring objects carry the `release` label that Prometheus selects. */}}
{{- define "cryptovol.monitoringLabels" -}}
{{ include "cryptovol.labels" . }}
release: {{ .Values.monitoring.release | quote }}
{{- end -}}

{{/* Images ----------------------------------------------------------------- */}}

{{/* Image reference of a service. Call with (list $ .Values.api.image). */}}
{{- define "cryptovol.image" -}}
{{- $root := index . 0 -}}
{{- $img := index . 1 -}}
{{- $repo := $img.repository -}}
{{- if $root.Values.image.registry -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" $root.Values.image.registry) $img.repository -}}
{{- end -}}
{{- $tag := default $root.Chart.AppVersion $img.tag -}}
{{- if $img.digest -}}
{{- printf "%s:%s@%s" $repo $tag $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{/* Configuration ---------------------------------------------------------- */}}

{{- define "cryptovol.kafkaBootstrap" -}}
{{- default (printf "%s-kafka-bootstrap:9092" .Values.kafka.clusterName) .Values.kafka.bootstrapServers -}}
{{- end -}}

{{- define "cryptovol.apiUrl" -}}
{{- default (printf "http://%s:%v" (include "cryptovol.componentName" (list . "api")) .Values.api.service.port) .Values.consumer.apiUrl -}}
{{- end -}}

{{- define "cryptovol.mlflowUri" -}}
{{- if .Values.mlflow.externalTrackingUri -}}
{{- .Values.mlflow.externalTrackingUri -}}
{{- else if .Values.mlflow.enabled -}}
{{- printf "http://%s:%v" (include "cryptovol.componentName" (list . "mlflow")) .Values.mlflow.port -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by the four services (ConfigMap data). */}}
{{- define "cryptovol.commonConfig" -}}
KAFKA_BOOTSTRAP_SERVERS: {{ include "cryptovol.kafkaBootstrap" . | quote }}
PRODUCTS: {{ join "," .Values.products | quote }}
LOG_LEVEL: {{ .Values.logLevel | quote }}
TOPIC_RAW: {{ .Values.kafka.topics.names.raw | quote }}
TOPIC_FEATURES: {{ .Values.kafka.topics.names.features | quote }}
TOPIC_PREDICTIONS: {{ .Values.kafka.topics.names.predictions | quote }}
KAFKA_PARTITIONS: {{ .Values.kafka.topics.partitions | quote }}
KAFKA_REPLICATION_FACTOR: {{ .Values.kafka.topics.replicas | quote }}
DATA_DIR: "/data"
HOME: "/tmp"
MPLCONFIGDIR: "/tmp/matplotlib"
PYTHONUNBUFFERED: "1"
{{- with include "cryptovol.mlflowUri" . }}
MLFLOW_TRACKING_URI: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Extra env of a service from its `env` map. Call with a map. */}}
{{- define "cryptovol.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* Pod building blocks ---------------------------------------------------- */}}

{{- define "cryptovol.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end -}}

{{- define "cryptovol.securityContext" -}}
{{ toYaml .Values.securityContext }}
{{- end -}}

{{- define "cryptovol.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Scheduling fields of a component's values. Call with a component's values. */}}
{{- define "cryptovol.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Worker pod probes on the `metrics` port. */}}
{{- define "cryptovol.workerProbes" -}}
startupProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: 2
  failureThreshold: 30
livenessProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: metrics}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
{{- end -}}

{{/* Writable scratch space under a read-only root filesystem. */}}
{{- define "cryptovol.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end -}}

{{- define "cryptovol.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}
