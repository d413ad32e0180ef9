{{/*
Checks across values that the schema cannot express. Each failure names the keys and says the fix.
Included once, from deployment.yaml (rendered by every release).
*/}}
{{- define "tritonkit.validate" -}}
{{- include "tritonkit.validate.repository" . }}
{{- include "tritonkit.validate.autoscaling" . }}
{{- include "tritonkit.validate.disruptionBudget" . }}
{{- include "tritonkit.validate.security" . }}
{{- include "tritonkit.validate.batch" . }}
{{- end }}

{{- define "tritonkit.validate.repository" -}}
{{- if and (eq .Values.modelRepository.source "pvc") (not .Values.modelRepository.pvc.existingClaim) }}
{{- fail "modelRepository.pvc.existingClaim is required when modelRepository.source is pvc" }}
{{- end }}
{{- if and (eq .Values.modelRepository.source "image") (not .Values.modelRepository.image.repository) }}
{{- fail "modelRepository.image.repository is required when modelRepository.source is image" }}
{{- end }}
{{- end }}

{{/*
Autoscaling, and for queue time the whole metrics pipeline: Prometheus scraping Triton, the recording rule,
and what turns the recorded series into replicas (KEDA, or prometheus-adapter behind an HPA).
*/}}
{{- define "tritonkit.validate.autoscaling" -}}
{{- $as := .Values.autoscaling }}
{{- if $as.enabled }}
{{- if not (or $as.cpu.enabled $as.queueTime.enabled) }}
{{- fail "autoscaling.enabled needs autoscaling.cpu.enabled or autoscaling.queueTime.enabled" }}
{{- end }}
{{- if and $as.cpu.enabled (not (dig "requests" "cpu" "" .Values.resources)) }}
{{- fail "autoscaling.cpu.enabled needs resources.requests.cpu: CPU utilisation is measured against the request" }}
{{- end }}
{{- if gt (int $as.minReplicas) (int $as.maxReplicas) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- $qt := $as.queueTime }}
{{- if $qt.enabled }}
{{- if not .Values.prometheusRule.enabled }}
{{- fail (printf "autoscaling.queueTime.enabled scales on the series %s that the chart's PrometheusRule records: set prometheusRule.enabled=true (needs the Prometheus Operator CRDs)" $qt.metricName) }}
{{- end }}
{{- if and (not .Values.serviceMonitor.enabled) (not .Values.prometheusRule.seriesSelector) }}
{{- fail "autoscaling.queueTime.enabled needs Prometheus to scrape Triton's metrics port: set serviceMonitor.enabled=true, or set prometheusRule.seriesSelector to the labels your own scrape config gives Triton's series" }}
{{- end }}
{{- if eq $qt.provider "keda" }}
{{- if not $qt.keda.serverAddress }}
{{- fail "autoscaling.queueTime.keda.serverAddress is required with provider keda: the Prometheus URL KEDA queries, e.g. http://kube-prometheus-stack-prometheus.monitoring.svc:9090" }}
{{- end }}
{{- if not (.Capabilities.APIVersions.Has "keda.sh/v1alpha1") }}
{{- fail "autoscaling.queueTime.provider=keda needs KEDA, and the cluster has no keda.sh/v1alpha1 API: install it (helm install keda kedacore/keda --namespace keda --create-namespace) or set autoscaling.queueTime.provider=prometheusAdapter; rendering offline (helm template), pass --api-versions keda.sh/v1alpha1" }}
{{- end }}
{{- else if not (.Capabilities.APIVersions.Has "custom.metrics.k8s.io/v1beta1") }}
{{- fail (printf "autoscaling.queueTime.provider=prometheusAdapter needs prometheus-adapter serving custom.metrics.k8s.io/v1beta1, and the cluster has none: install it with the rule for %s (helm/README.md, Queue-time autoscaling) or set autoscaling.queueTime.provider=keda; rendering offline (helm template), pass --api-versions custom.metrics.k8s.io/v1beta1" $qt.metricName) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A PodDisruptionBudget that no eviction can satisfy makes every node drain wait forever, silently.
*/}}
{{- define "tritonkit.validate.disruptionBudget" -}}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if $pdb.enabled }}
{{- $max := toString $pdb.maxUnavailable }}
{{- $min := toString $pdb.minAvailable }}
{{- if and (ne $max "") (ne $min "") }}
{{- fail "podDisruptionBudget: set maxUnavailable or minAvailable, not both (set the other to \"\")" }}
{{- end }}
{{- if and (eq $max "") (eq $min "") }}
{{- fail "podDisruptionBudget.enabled needs maxUnavailable (e.g. 1) or minAvailable" }}
{{- end }}
{{- $replicas := ternary (int .Values.autoscaling.minReplicas) (int .Values.replicaCount) .Values.autoscaling.enabled }}
{{- $source := ternary "autoscaling.minReplicas" "replicaCount" .Values.autoscaling.enabled }}
{{- if ne $max "" }}
{{- if eq (trimSuffix "%" $max | int) 0 }}
{{- fail (printf "podDisruptionBudget.maxUnavailable %s lets no Triton pod be evicted, so every node drain would wait forever: set it to 1 or more" $max) }}
{{- end }}
{{- else if gt $replicas 0 }}
{{- $kept := int $min }}
{{- if hasSuffix "%" $min }}
{{- $kept = div (add (mul (trimSuffix "%" $min | int) $replicas) 99) 100 }}
{{- end }}
{{- if ge $kept $replicas }}
{{- fail (printf "podDisruptionBudget.minAvailable %s keeps all %d Triton pods (%s) available, so a node drain would wait forever: set podDisruptionBudget.maxUnavailable: 1 and minAvailable: \"\", or minAvailable below %d" $min $replicas $source $replicas) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Triton's restricted APIs and what an Ingress may carry.
*/}}
{{- define "tritonkit.validate.security" -}}
{{- $t := .Values.triton }}
{{- if has "health" $t.restrictedApis }}
{{- fail "triton.restrictedApis includes health: the kubelet's probes call /v2/health/* without the admin key, so Triton would never turn ready; remove health" }}
{{- end }}
{{- if and .Values.ingress.enabled (has $t.modelControlMode (list "explicit" "poll")) (not .Values.ingress.allowModelControl) }}
{{- $guard := ternary "guarded by the admin key (triton.restrictedApis)" "and model-repository is not even in triton.restrictedApis" (has "model-repository" $t.restrictedApis) }}
{{- fail (printf "triton.modelControlMode=%s with ingress.enabled would expose model loading through the Ingress to whoever reaches it, %s. Use modelControlMode none, or keep the Ingress off, or accept it with ingress.allowModelControl=true" $t.modelControlMode $guard) }}
{{- end }}
{{- end }}

{{/*
Batch scoring: the image, where results go, secrets kept out of URIs, exit-code lists, the freshness store.
URIs are never quoted in messages (they may carry secrets).
*/}}
{{- define "tritonkit.validate.batch" -}}
{{- $b := .Values.batch }}
{{- if $b.enabled }}
{{- $_ := include "tritonkit.kitImage" . }}
{{- range $key := list "input" "output" }}
{{- if regexMatch "^[a-z0-9+.-]+://[^/]*@" (get $b $key) }}
{{- fail (printf "batch.%s carries credentials in its URI (user:secret@): put them in the Secret named by batch.objectStore.existingSecret, so they never appear in the manifests" $key) }}
{{- end }}
{{- end }}
{{- if regexMatch "^[a-z0-9+.-]+://[^/]*@" $b.store.url }}
{{- fail "batch.store.url carries a password (user:secret@): put the whole URL in a Secret and name it in batch.store.existingSecret" }}
{{- end }}
{{- if and (not (regexMatch "^[a-z0-9+.-]+://" $b.output)) (not $b.dataVolume.existingClaim) }}
{{- fail "batch.output is a local path and batch.dataVolume.existingClaim is empty, so the results would vanish with the pod: give an object-store URI (s3://, gs://, abfs://) or a PersistentVolumeClaim" }}
{{- end }}
{{- range $b.failJobExitCodes }}
{{- if has . $b.retryExitCodes }}
{{- fail (printf "exit code %v is in both batch.failJobExitCodes and batch.retryExitCodes" .) }}
{{- end }}
{{- end }}
{{- if and (not (kindIs "invalid" $b.maxFailedIndexes)) (gt (int $b.maxFailedIndexes) (int $b.shards)) }}
{{- fail (printf "batch.maxFailedIndexes %v exceeds batch.shards %v" $b.maxFailedIndexes $b.shards) }}
{{- end }}
{{- if and $b.store.url $b.store.existingSecret }}
{{- fail "set batch.store.url or batch.store.existingSecret, not both" }}
{{- end }}
{{- if and $b.freshness.enabled (not (or $b.store.url $b.store.existingSecret)) }}
{{- fail "batch.freshness.enabled checks the prediction store the runs write to: set batch.store.url (or batch.store.existingSecret)" }}
{{- end }}
{{- end }}
{{- end }}
