{{/*
Objects that every service has in the same shape. Each service folder calls
these with (list $ "<component>" ...) so the manifests stay identical in form.
*/}}

{{- define "cryptovol.serviceAccount" -}}
{{- $root := index . 0 -}}
{{- $comp := index . 1 -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "cryptovol.componentName" (list $root $comp) }}
  labels:
    {{- include "cryptovol.componentLabels" (list $root $comp) | nindent 4 }}
# the services never call the Kubernetes API
automountServiceAccountToken: false
{{- end -}}

{{/* A worker (ingest, featurizer, consumer, evaluator): metrics and probes on port 9100. */}}
{{- define "cryptovol.workerDeployment" -}}
{{- $root := index . 0 -}}
{{- $comp := index . 1 -}}
{{- $vals := index $root.Values $comp -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "cryptovol.componentName" (list $root $comp) }}
  labels:
    {{- include "cryptovol.componentLabels" (list $root $comp) | nindent 4 }}
spec:
  replicas: {{ $vals.replicaCount }}
  revisionHistoryLimit: 5
  {{- if has $comp (list "ingest" "evaluator") }}
  # one at a time: one exchange subscriber (ingest); one grader, whose quality windows are
  # those of every partition and whose successor reads back what it graded (evaluator)
  strategy:
    type: Recreate
  {{- end }}
  selector:
    matchLabels:
      {{- include "cryptovol.selectorLabels" (list $root $comp) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "cryptovol.componentLabels" (list $root $comp) | nindent 8 }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/" $comp "/configmap.yaml") $root | sha256sum }}
    spec:
      serviceAccountName: {{ include "cryptovol.componentName" (list $root $comp) }}
      automountServiceAccountToken: false
      # no Docker-link variables: a Service named like a setting (`kafka` gives KAFKA_PORT=tcp://...)
      # would override the service's configuration
      enableServiceLinks: false
      {{- with include "cryptovol.imagePullSecrets" $root }}{{ . | trim | nindent 6 }}{{- end }}
      securityContext:
        {{- include "cryptovol.podSecurityContext" $root | nindent 8 }}
      # the services stop on SIGTERM after flushing producers and committing offsets
      terminationGracePeriodSeconds: 30
      containers:
        - name: {{ $comp }}
          image: {{ include "cryptovol.image" (list $root $vals.image) | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          envFrom:
            - configMapRef:
                name: {{ include "cryptovol.componentName" (list $root $comp) }}
          {{- with $vals.env }}
          env:
            {{- with include "cryptovol.extraEnv" . }}{{ . | trim | nindent 12 }}{{- end }}
          {{- end }}
          ports:
            - name: metrics
              containerPort: 9100
              protocol: TCP
          {{- include "cryptovol.workerProbes" $root | nindent 10 }}
          resources:
            {{- toYaml $vals.resources | nindent 12 }}
          securityContext:
            {{- include "cryptovol.securityContext" $root | nindent 12 }}
          volumeMounts:
            {{- include "cryptovol.scratchMounts" $root | nindent 12 }}
            - name: data
              mountPath: /data
      volumes:
        {{- include "cryptovol.scratchVolumes" $root | nindent 8 }}
        - name: data
          emptyDir:
            sizeLimit: {{ $vals.dataSizeLimit }}
      {{- with include "cryptovol.scheduling" $vals }}{{ . | trim | nindent 6 }}{{- end }}
{{- end -}}

{{/* ClusterIP Service exposing a worker's metrics port (for the ServiceMonitor). */}}
{{- define "cryptovol.metricsService" -}}
{{- $root := index . 0 -}}
{{- $comp := index . 1 -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "cryptovol.componentName" (list $root $comp) }}
  labels:
    {{- include "cryptovol.componentLabels" (list $root $comp) | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "cryptovol.selectorLabels" (list $root $comp) | nindent 4 }}
  ports:
    - name: metrics
      port: 9100
      targetPort: metrics
      protocol: TCP
{{- end -}}

{{- define "cryptovol.pdb" -}}
{{- $root := index . 0 -}}
{{- $comp := index . 1 -}}
{{- $vals := index $root.Values $comp -}}
{{- if and $vals.enabled $vals.pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "cryptovol.componentName" (list $root $comp) }}
  labels:
    {{- include "cryptovol.componentLabels" (list $root $comp) | nindent 4 }}
spec:
  minAvailable: {{ $vals.pdb.minAvailable }}
  selector:
    matchLabels:
      {{- include "cryptovol.selectorLabels" (list $root $comp) | nindent 6 }}
{{- end }}
{{- end -}}

{{/* ServiceMonitor for one service. Call with (list $ "api" "http"). */}}
{{- define "cryptovol.serviceMonitor" -}}
{{- $root := index . 0 -}}
{{- $comp := index . 1 -}}
{{- $port := index . 2 -}}
{{- if $root.Values.monitoring.serviceMonitor.enabled }}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "cryptovol.componentName" (list $root $comp) }}
  labels:
    {{- include "cryptovol.monitoringLabels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $comp }}
spec:
  selector:
    matchLabels:
      {{- include "cryptovol.selectorLabels" (list $root $comp) | nindent 6 }}
  namespaceSelector:
    matchNames:
      - {{ $root.Release.Namespace }}
  endpoints:
    - port: {{ $port }}
      path: /metrics
      # the operator adds target labels (namespace, service, pod, endpoint=<port name>);
      # the API's own `endpoint` label (docs/metrics.md) must win over the port name
      honorLabels: true
      interval: {{ $root.Values.monitoring.serviceMonitor.interval }}
      scrapeTimeout: {{ $root.Values.monitoring.serviceMonitor.scrapeTimeout }}
{{- end }}
{{- end -}}
