{{/*
Chart name, truncated to the 63 characters of a DNS label.
*/}}
{{- define "tritonkit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's resources: <release>-<chart name>, or <release> alone when it already
contains the chart name; truncated to 63 characters.
*/}}
{{- define "tritonkit.fullname" -}}
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

{{/*
Chart name and version for the helm.sh/chart label.
*/}}
{{- define "tritonkit.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select this release's pods.
*/}}
{{- define "tritonkit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tritonkit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels of every resource.
*/}}
{{- define "tritonkit.labels" -}}
helm.sh/chart: {{ include "tritonkit.chart" . }}
{{ include "tritonkit.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tritonkit
{{- end }}

{{/*
Labels that select the Triton server pods only (not the batch or test pods).
*/}}
{{- define "tritonkit.serverSelectorLabels" -}}
{{ include "tritonkit.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/*
Labels of the Triton pod template: the selector labels only, no chart or kit version, so that bumping the
chart or the kit does not roll the Triton pods (the Deployment, Service and others carry the versions).
*/}}
{{- define "tritonkit.serverPodLabels" -}}
{{ include "tritonkit.serverSelectorLabels" . }}
{{- end }}

{{/*
Common labels plus the server component.
*/}}
{{- define "tritonkit.serverLabels" -}}
{{ include "tritonkit.labels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/*
Common labels plus the batch component.
*/}}
{{- define "tritonkit.batchLabels" -}}
{{ include "tritonkit.labels" . }}
app.kubernetes.io/component: batch
{{- end }}

{{/*
Name of the service account the Triton pods use.
*/}}
{{- define "tritonkit.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tritonkit.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Seconds the kubelet waits before killing a terminating Triton pod: the preStop sleep, then Triton's
--exit-timeout-secs, then a margin. All three come from triton.* so they cannot drift apart.
*/}}
{{- define "tritonkit.terminationGracePeriodSeconds" -}}
{{- $t := .Values.triton }}
{{- add (int $t.preStopSleepSeconds) (int $t.exitTimeoutSeconds) (int $t.terminationGraceMarginSeconds) }}
{{- end }}

{{/*
Value of --model-repository for the configured source.
*/}}
{{- define "tritonkit.modelRepositoryPath" -}}
{{- if eq .Values.modelRepository.source "objectStore" }}
{{- required "modelRepository.objectStore.uri is required when modelRepository.source is objectStore" .Values.modelRepository.objectStore.uri }}
{{- else }}
{{- .Values.modelRepository.mountPath }}
{{- end }}
{{- end }}

{{/*
Resources of the Triton container: the user's resources, plus nvidia.com/gpu requests and limits when
gpu.enabled. Fails when nvidia.com/gpu is set by hand, so GPU counts have one source.
*/}}
{{- define "tritonkit.resources" -}}
{{- $res := deepCopy (default (dict) .Values.resources) }}
{{- range $kind := list "requests" "limits" }}
{{- if hasKey (default (dict) (get $res $kind)) "nvidia.com/gpu" }}
{{- fail (printf "resources.%s sets nvidia.com/gpu: use gpu.enabled and gpu.count instead" $kind) }}
{{- end }}
{{- end }}
{{- if .Values.gpu.enabled }}
{{- range $kind := list "requests" "limits" }}
{{- $m := deepCopy (default (dict) (get $res $kind)) }}
{{- $_ := set $m "nvidia.com/gpu" (int $.Values.gpu.count) }}
{{- $_ := set $res $kind $m }}
{{- end }}
{{- end }}
{{- toYaml $res }}
{{- end }}

{{/*
Affinity of the Triton pods: the user's affinity with a required nvidia.com/gpu.product term merged in
(added to every existing node selector term, since terms are ORed) when gpu.products is set.
*/}}
{{- define "tritonkit.affinity" -}}
{{- $aff := deepCopy (default (dict) .Values.affinity) }}
{{- if and .Values.gpu.enabled .Values.gpu.products }}
{{- $expr := dict "key" "nvidia.com/gpu.product" "operator" "In" "values" .Values.gpu.products }}
{{- $node := default (dict) (get $aff "nodeAffinity") }}
{{- $required := default (dict) (get $node "requiredDuringSchedulingIgnoredDuringExecution") }}
{{- $terms := list }}
{{- range $term := default (list) (get $required "nodeSelectorTerms") }}
{{- $t := deepCopy $term }}
{{- $_ := set $t "matchExpressions" (append (default (list) (get $t "matchExpressions")) $expr) }}
{{- $terms = append $terms $t }}
{{- end }}
{{- if not $terms }}
{{- $terms = list (dict "matchExpressions" (list $expr)) }}
{{- end }}
{{- $_ := set $required "nodeSelectorTerms" $terms }}
{{- $_ := set $node "requiredDuringSchedulingIgnoredDuringExecution" $required }}
{{- $_ := set $aff "nodeAffinity" $node }}
{{- end }}
{{- if $aff }}
{{- toYaml $aff }}
{{- end }}
{{- end }}

{{/*
Tolerations of the Triton pods: the user's, plus the nvidia.com/gpu taint when asked for.
*/}}
{{- define "tritonkit.tolerations" -}}
{{- $tol := default (list) .Values.tolerations }}
{{- if and .Values.gpu.enabled .Values.gpu.tolerateGpuTaint }}
{{- $tol = append $tol (dict "key" "nvidia.com/gpu" "operator" "Exists" "effect" "NoSchedule") }}
{{- end }}
{{- if $tol }}
{{- toYaml $tol }}
{{- end }}
{{- end }}

{{/*
Name of the headless Service whose DNS name resolves to every ready Triton pod (gRPC client-side balancing).
*/}}
{{- define "tritonkit.headlessName" -}}
{{- printf "%s-headless" (include "tritonkit.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{/*
Triton's gRPC address for the kit's clients in the cluster (batch jobs): batch.tritonUrl when set; else
dns:///<headless Service>:8001 (round robin over every ready pod; the pods' own port, since a headless
Service does not remap ports) with batch.clientSideBalancing, or the ClusterIP Service's grpc port without.
*/}}
{{- define "tritonkit.grpcAddress" -}}
{{- $domain := printf "%s.svc.%s" .Release.Namespace .Values.clusterDomain }}
{{- if .Values.batch.tritonUrl }}
{{- .Values.batch.tritonUrl }}
{{- else if .Values.batch.clientSideBalancing }}
{{- printf "dns:///%s.%s:8001" (include "tritonkit.headlessName" .) $domain }}
{{- else }}
{{- printf "%s.%s:%d" (include "tritonkit.fullname" .) $domain (int .Values.service.ports.grpc) }}
{{- end }}
{{- end }}

{{/*
The tritonkit image (batch jobs, freshness check): kitImage.repository is required, since no public image is
published; the tag defaults to the chart's appVersion.
*/}}
{{- define "tritonkit.kitImage" -}}
{{- $repo := required "kitImage.repository is required for the batch jobs: no public tritonkit image is published; build the repository's Dockerfile (docker build -t REGISTRY/tritonkit:TAG .), push it, and set kitImage.repository=REGISTRY/tritonkit" .Values.kitImage.repository }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.kitImage.tag) }}
{{- end }}

{{/*
Secret and key that hold Triton's admin key: triton.adminKey.existingSecret, or the Secret this chart generates.
*/}}
{{- define "tritonkit.adminKeySecretName" -}}
{{- default (printf "%s-admin-key" (include "tritonkit.fullname" . | trunc 53 | trimSuffix "-")) .Values.triton.adminKey.existingSecret }}
{{- end }}

{{/*
"true" when the restricted groups include one the kit's clients need (inference, metadata, model-config):
the batch and test pods then send the admin key too.
*/}}
{{- define "tritonkit.clientsNeedAdminKey" -}}
{{- $needed := list "inference" "metadata" "model-config" }}
{{- range .Values.triton.restrictedApis }}
{{- if has . $needed }}true{{ end }}
{{- end }}
{{- end }}

{{/*
Environment variable TRITONKIT_ADMIN_KEY read from the admin-key Secret (a list entry for a container's env).
*/}}
{{- define "tritonkit.adminKeyEnv" -}}
- name: TRITONKIT_ADMIN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "tritonkit.adminKeySecretName" . }}
      key: {{ .Values.triton.adminKey.secretKey }}
{{- end }}

{{/*
PromQL label matchers that select this release's Triton series.
*/}}
{{- define "tritonkit.seriesSelector" -}}
{{- default (printf "namespace=%q,service=%q" .Release.Namespace (include "tritonkit.fullname" .)) .Values.prometheusRule.seriesSelector }}
{{- end }}

{{/*
Labels of every alert in the PrometheusRule: the severity and prometheusRule.alerts.labels.
*/}}
{{- define "tritonkit.alertLabels" -}}
severity: {{ .Values.prometheusRule.alerts.severity }}
{{- with .Values.prometheusRule.alerts.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}
