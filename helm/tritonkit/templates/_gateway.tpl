{{/*
Name of the gateway's resources: <full name>-gateway, within the 63 characters of a DNS label.
*/}}
{{- define "tritonkit.gateway.fullname" -}}
{{- printf "%s-gateway" (include "tritonkit.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/*
Labels that select the gateway pods only.
*/}}
{{- define "tritonkit.gateway.selectorLabels" -}}
{{ include "tritonkit.selectorLabels" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{/*
Common labels plus the gateway component.
*/}}
{{- define "tritonkit.gateway.labels" -}}
{{ include "tritonkit.labels" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{/*
Triton's gRPC address for the gateway's live calls: gateway.tritonUrl, or this release's Service.
*/}}
{{- define "tritonkit.gateway.tritonUrl" -}}
{{- if .Values.gateway.tritonUrl }}
{{- .Values.gateway.tritonUrl }}
{{- else }}
{{- printf "%s.%s.svc.%s:%d" (include "tritonkit.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.service.ports.grpc) }}
{{- end }}
{{- end }}

{{/*
PromQL label matchers selecting this release's gateway series (the labels a ServiceMonitor scrape adds).
*/}}
{{- define "tritonkit.gateway.seriesSelector" -}}
{{- printf "namespace=%q,service=%q" .Release.Namespace (include "tritonkit.gateway.fullname" .) }}
{{- end }}

{{/*
Checks across gateway values that the schema cannot express; fails naming the keys.
*/}}
{{- define "tritonkit.gateway.validate" -}}
{{- $g := .Values.gateway }}
{{- if not $g.models }}
{{- fail "gateway.models is required when gateway.enabled: the models the gateway serves" }}
{{- end }}
{{- if not $g.store.existingSecret }}
{{- fail "gateway.store.existingSecret is required when gateway.enabled: a Secret holding the Redis URL (key gateway.store.key)" }}
{{- end }}
{{- if and $g.autoscaling.enabled (not (dig "requests" "cpu" "" $g.resources)) }}
{{- fail "gateway.autoscaling.enabled needs gateway.resources.requests.cpu: CPU utilisation is measured against the request" }}
{{- end }}
{{- if and $g.autoscaling.enabled (gt (int $g.autoscaling.minReplicas) (int $g.autoscaling.maxReplicas)) }}
{{- fail "gateway.autoscaling.minReplicas must not exceed gateway.autoscaling.maxReplicas" }}
{{- end }}
{{- end }}
