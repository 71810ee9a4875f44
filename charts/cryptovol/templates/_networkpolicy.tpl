{{/* NetworkPolicies from one table. `networkPolicy.egress` lists, per component, the peers
its pods may connect to: another component of the chart (on that component's `port`) or an
entry of `networkPolicy.external`. A component's ingress admits exactly the components that
list it, plus Prometheus on its metrics port and `networkPolicy.ingressFrom.<component>`.
The default-deny policy in common/ selects every pod of the release and opens DNS. */}}

{{/* Port a component serves to its clients (api.port, mlflow.port). Call with (list $ "api"). */}}
{{- define "cryptovol.np.componentPort" -}}
{{- $root := index . 0 -}}
{{- $comp := index . 1 -}}
{{- $vals := index $root.Values $comp | default dict -}}
{{- required (printf "networkPolicy: %q is neither in networkPolicy.external nor a component with a port" $comp) $vals.port -}}
{{- end -}}

{{/* Pods of a component of this release. Call with (list $ "consumer"). */}}
{{- define "cryptovol.np.pods" -}}
- podSelector:
    matchLabels:
      {{- include "cryptovol.selectorLabels" . | nindent 6 }}
{{- end -}}

{{/* Peers of an external entry; Kafka defaults to the Strimzi broker pods. Call with (list $ "kafka"). */}}
{{- define "cryptovol.np.externalPeers" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $ext := index $root.Values.networkPolicy.external $name -}}
{{- if $ext.peers -}}
{{ toYaml $ext.peers }}
{{- else if eq $name "kafka" -}}
- podSelector:
    matchLabels:
      strimzi.io/cluster: {{ $root.Values.kafka.clusterName }}
      strimzi.io/kind: Kafka
{{- else -}}
{{- fail (printf "networkPolicy.external.%s.peers is empty" $name) -}}
{{- end -}}
{{- end -}}

{{/* The components that list `comp` among their egress peers. Call with (list $ "api"). */}}
{{- define "cryptovol.np.clients" -}}
{{- $root := index . 0 -}}
{{- $comp := index . 1 -}}
{{- range $client, $peers := $root.Values.networkPolicy.egress -}}
{{- if has $comp $peers }}{{ $client }} {{ end -}}
{{- end -}}
{{- end -}}

{{/* The NetworkPolicy of one component. Call with (list $ "api" "http"); the third item is
the port Prometheus scrapes, "" for none. */}}
{{- define "cryptovol.networkPolicy" -}}
{{- $root := index . 0 -}}
{{- $comp := index . 1 -}}
{{- $metrics := index . 2 -}}
{{- $np := $root.Values.networkPolicy -}}
{{- $clients := include "cryptovol.np.clients" (list $root $comp) | splitList " " | compact -}}
{{- $extraFrom := index $np.ingressFrom $comp | default list -}}
{{- $peers := index $np.egress $comp | default list -}}
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
  {{- if or $metrics $clients $extraFrom }}
  ingress:
    {{- if $metrics }}
    # Prometheus scrapes /metrics
    - from:
        - namespaceSelector:
            matchLabels:
              kubernetes.io/metadata.name: {{ $np.prometheusNamespace }}
      ports:
        - port: {{ $metrics }}
          protocol: TCP
    {{- end }}
    {{- if or $clients $extraFrom }}
    # clients: {{ join ", " $clients | default "(networkPolicy.ingressFrom)" }}
    - from:
        {{- range $clients }}
        {{- include "cryptovol.np.pods" (list $root .) | nindent 8 }}
        {{- end }}
        {{- with $extraFrom }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - port: {{ include "cryptovol.np.componentPort" (list $root $comp) }}
          protocol: TCP
    {{- end }}
  {{- else }}
  ingress: []
  {{- end }}
  {{- if $peers }}
  egress:
    {{- range $peer := $peers }}
    # to {{ $peer }}
    {{- if hasKey $np.external $peer }}
    - to:
        {{- include "cryptovol.np.externalPeers" (list $root $peer) | nindent 8 }}
      ports:
        {{- range (index $np.external $peer).ports }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
    {{- else }}
    - to:
        {{- include "cryptovol.np.pods" (list $root $peer) | nindent 8 }}
      ports:
        - port: {{ include "cryptovol.np.componentPort" (list $root $peer) }}
          protocol: TCP
    {{- end }}
    {{- end }}
  {{- else }}
  egress: []
  {{- end }}
{{- end -}}

{{/* DNS (kube-dns in any namespace): open to every pod of the release by default-deny. */}}
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
