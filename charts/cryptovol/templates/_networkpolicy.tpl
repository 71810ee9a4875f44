{{/* NetworkPolicy building blocks. The default-deny policy in common/ selects every
pod of the release; each service's policy opens only its data-flow edges. */}}

{{- define "cryptovol.np.header" -}}
{{- $root := index . 0 -}}
{{- $comp := index . 1 -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "cryptovol.componentName" (list $root $comp) }}
  labels:
    {{- include "cryptovol.componentLabels" (list $root $comp) | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "cryptovol.selectorLabels" (list $root $comp) | nindent 6 }}
  policyTypes: [Ingress, Egress]
{{- end -}}

{{/* Prometheus (in its namespace) scrapes a port. Call with (list $ "metrics"). */}}
{{- define "cryptovol.np.fromPrometheus" -}}
{{- $root := index . 0 -}}
- from:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ $root.Values.networkPolicy.prometheusNamespace }}
  ports:
    - port: {{ index . 1 }}
      protocol: TCP
{{- end -}}

{{- define "cryptovol.np.toKafka" -}}
- to:
    {{- if .Values.networkPolicy.kafkaPeers }}
    {{- toYaml .Values.networkPolicy.kafkaPeers | nindent 4 }}
    {{- else }}
    - podSelector:
        matchLabels:
          strimzi.io/cluster: {{ .Values.kafka.clusterName }}
          strimzi.io/kind: Kafka
    {{- end }}
  ports:
    - port: {{ .Values.networkPolicy.kafkaPort }}
      protocol: TCP
{{- end -}}

{{- define "cryptovol.np.toDns" -}}
- to:
    - namespaceSelector: {}
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end -}}

{{/* Pods of a component of this release. Call with (list $ "consumer"). */}}
{{- define "cryptovol.np.pods" -}}
- podSelector:
    matchLabels:
      {{- include "cryptovol.selectorLabels" . | nindent 6 }}
{{- end -}}
