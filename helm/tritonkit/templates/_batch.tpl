{{/*
Names of the batch resources: the one-off Job's prefix (its name ends in a hash of its spec) and the
CronJob's name (52 characters at most: the controller appends -<minutes since epoch> to each run's Job).
*/}}
{{- define "tritonkit.batch.jobPrefix" -}}
{{- printf "%s-score" (include "tritonkit.fullname" . | trunc 40 | trimSuffix "-") }}
{{- end }}

{{- define "tritonkit.batch.cronJobName" -}}
{{- printf "%s-score" (include "tritonkit.fullname" . | trunc 46 | trimSuffix "-") }}
{{- end }}

{{- define "tritonkit.batch.freshnessName" -}}
{{- printf "%s-freshness" (include "tritonkit.fullname" . | trunc 42 | trimSuffix "-") }}
{{- end }}

{{/*
Where one shard of one run writes: <output>/<run id>/shard-<i>-of-<N>.<format>. The run id is the Job's name
(unique per CronJob run, stable across a run's retries, so --resume picks up the same folder).
*/}}
{{- define "tritonkit.batch.outputPath" -}}
{{- $b := .Values.batch }}
{{- printf "%s/$(TRITONKIT_RUN_ID)/shard-$(JOB_COMPLETION_INDEX)-of-%d.%s" (trimSuffix "/" $b.output) (int $b.shards) $b.format }}
{{- end }}

{{/*
Environment of the scoring and freshness containers: HOME (the root filesystem is read-only) and the
prediction store (score --store and freshness read TRITONKIT_STORE). Secrets arrive by reference only.
*/}}
{{- define "tritonkit.batch.storeEnv" -}}
{{- $b := .Values.batch -}}
- name: HOME
  value: /tmp
{{- if $b.store.existingSecret }}
- name: TRITONKIT_STORE
  valueFrom:
    secretKeyRef:
      name: {{ $b.store.existingSecret }}
      key: {{ $b.store.secretKey }}
{{- else if $b.store.url }}
- name: TRITONKIT_STORE
  value: {{ $b.store.url | quote }}
{{- end }}
{{- end }}

{{/*
Object-store settings of the scoring container that are not secret: an S3-compatible endpoint and where the
GCS key file is mounted. Credentials come from batch.objectStore.existingSecret through envFrom.
*/}}
{{- define "tritonkit.batch.objectStoreEnv" -}}
{{- $o := .Values.batch.objectStore }}
{{- with $o.endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- if $o.gcsCredentialsKey }}
- name: GOOGLE_APPLICATION_CREDENTIALS
  value: /var/run/secrets/tritonkit/gcs/credentials.json
{{- end }}
{{- end }}

{{/*
Pod-level settings shared by the scoring and freshness pods.
*/}}
{{- define "tritonkit.batch.podSettings" -}}
{{- $b := .Values.batch -}}
restartPolicy: Never
{{- with $b.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $b.podSecurityContext | nindent 2 }}
{{- with $b.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $b.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Volume mounts of the batch containers, then their volumes: /tmp, the data claim, the GCS key file.
*/}}
{{- define "tritonkit.batch.volumeMounts" -}}
{{- $b := .Values.batch -}}
- name: tmp
  mountPath: /tmp
{{- if $b.dataVolume.existingClaim }}
- name: data
  mountPath: {{ $b.dataVolume.mountPath }}
{{- end }}
{{- if $b.objectStore.gcsCredentialsKey }}
- name: gcs-credentials
  mountPath: /var/run/secrets/tritonkit/gcs
  readOnly: true
{{- end }}
{{- end }}

{{- define "tritonkit.batch.volumes" -}}
{{- $b := .Values.batch -}}
- name: tmp
  emptyDir: {}
{{- with $b.dataVolume.existingClaim }}
- name: data
  persistentVolumeClaim:
    claimName: {{ . }}
{{- end }}
{{- if $b.objectStore.gcsCredentialsKey }}
- name: gcs-credentials
  secret:
    secretName: {{ required "batch.objectStore.existingSecret is required with batch.objectStore.gcsCredentialsKey" $b.objectStore.existingSecret }}
    items:
      - key: {{ $b.objectStore.gcsCredentialsKey }}
        path: credentials.json
{{- end }}
{{- end }}

{{/*
envFrom of the batch pods: the object-store Secret's keys (AWS_*, AZURE_*), unless it only holds a GCS key
file, then batch.envFrom.
*/}}
{{- define "tritonkit.batch.envFrom" -}}
{{- $b := .Values.batch }}
{{- if and $b.objectStore.existingSecret (not $b.objectStore.gcsCredentialsKey) }}
- secretRef:
    name: {{ $b.objectStore.existingSecret }}
{{- end }}
{{- with $b.envFrom }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
What each exit code of `tritonkit score` means to the Job (tritonkit/errors.py has the table). Evicted or
preempted pods use up no retry; usage errors (2) fail the Job at once; server errors, overload, deadlines
and unwritable output are retried within the backoff limits. Rejected rows never fail the pod: the chart
passes --rejects-exit-code 0 and the rejects land beside the output.
*/}}
{{- define "tritonkit.batch.podFailurePolicy" -}}
{{- $b := .Values.batch -}}
{{- /* Before 1.29 the API's schema marks onPodConditions required in every rule: an empty list satisfies it. */}}
{{- $noConditions := semverCompare "<1.29.0-0" .Capabilities.KubeVersion.Version -}}
rules:
  - action: Ignore
    onPodConditions:
      - type: DisruptionTarget
        status: "True"
  {{- range $rule := list (list "FailJob" $b.failJobExitCodes) (list "Count" $b.retryExitCodes) }}
  {{- if index $rule 1 }}
  - action: {{ index $rule 0 }}
    onExitCodes:
      containerName: score
      operator: In
      values: {{ toJson (index $rule 1) }}
    {{- if $noConditions }}
    onPodConditions: []
    {{- end }}
  {{- end }}
  {{- end }}
{{- end }}

{{/*
Job spec shared by the one-off Job and the CronJob: an Indexed Job with one completion per shard, each pod
running `tritonkit score` on shard $(JOB_COMPLETION_INDEX) of batch.shards against this release's Triton.
Retries are per shard (backoffLimitPerIndex) where the cluster has it (Kubernetes 1.29+, GA in 1.33), else
for the whole Job (backoffLimit).
*/}}
{{- define "tritonkit.batch.jobSpec" -}}
{{- $b := .Values.batch }}
{{- $shards := int $b.shards }}
completionMode: Indexed
completions: {{ $shards }}
parallelism: {{ min (int $b.parallelism) $shards }}
{{- if and (not (kindIs "invalid" $b.backoffLimitPerIndex)) (semverCompare ">=1.29.0-0" .Capabilities.KubeVersion.Version) }}
backoffLimitPerIndex: {{ $b.backoffLimitPerIndex }}
{{- if not (kindIs "invalid" $b.maxFailedIndexes) }}
maxFailedIndexes: {{ $b.maxFailedIndexes }}
{{- end }}
{{- else }}
backoffLimit: {{ $b.backoffLimit }}
{{- end }}
podFailurePolicy:
  {{- include "tritonkit.batch.podFailurePolicy" . | nindent 2 }}
{{- with $b.activeDeadlineSeconds }}
activeDeadlineSeconds: {{ . }}
{{- end }}
{{- with $b.ttlSecondsAfterFinished }}
ttlSecondsAfterFinished: {{ . }}
{{- end }}
template:
  metadata:
    labels:
      {{- include "tritonkit.batchLabels" . | nindent 6 }}
  spec:
    {{- include "tritonkit.batch.podSettings" . | nindent 4 }}
    containers:
      - name: score
        image: {{ include "tritonkit.kitImage" . | quote }}
        imagePullPolicy: {{ .Values.kitImage.pullPolicy }}
        # The image's entrypoint is `tritonkit`; Kubernetes expands $(VAR) from the env below.
        args:
          - score
          - --model
          - {{ required "batch.model is required when batch.enabled" $b.model | quote }}
          - --input
          - {{ required "batch.input is required when batch.enabled" $b.input | quote }}
          - --output
          - {{ include "tritonkit.batch.outputPath" . | quote }}
          - --url
          - {{ include "tritonkit.grpcAddress" . | quote }}
          - --shard
          - {{ printf "$(JOB_COMPLETION_INDEX)/%d" $shards | quote }}
          # Wait for a Triton that is still starting (the first call included) with bounded backoff.
          - --retry-s
          - {{ $b.retrySeconds | quote }}
          # Rejected rows go to the rejects file beside the output and the report; the shard counts as done.
          - --rejects-exit-code
          - "0"
          {{- if $b.resume }}
          - --resume
          {{- end }}
          {{- range $b.extraArgs }}
          - {{ . | quote }}
          {{- end }}
        env:
          # Set by the Job controller in Indexed mode too; declared here so the args above never depend on it.
          - name: JOB_COMPLETION_INDEX
            valueFrom:
              fieldRef:
                fieldPath: metadata.annotations['batch.kubernetes.io/job-completion-index']
          # The run id: this run's Job name (the CronJob names each run's Job <cronjob>-<minutes since epoch>).
          - name: TRITONKIT_RUN_ID
            valueFrom:
              fieldRef:
                fieldPath: metadata.labels['batch.kubernetes.io/job-name']
          {{- include "tritonkit.batch.storeEnv" . | nindent 10 }}
          {{- with (include "tritonkit.batch.objectStoreEnv" . | trim) }}
          {{- . | nindent 10 }}
          {{- end }}
          {{- if include "tritonkit.clientsNeedAdminKey" . }}
          {{- include "tritonkit.adminKeyEnv" . | nindent 10 }}
          # triton.restrictedApis closes a group score needs: send the admin key as gRPC metadata.
          - name: TRITONKIT_HEADER
            value: triton-grpc-protocol-tritonkit-admin-key=$(TRITONKIT_ADMIN_KEY)
          {{- end }}
          {{- with $b.env }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        {{- with (include "tritonkit.batch.envFrom" . | trim) }}
        envFrom:
          {{- . | nindent 10 }}
        {{- end }}
        {{- with $b.resources }}
        resources:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        securityContext:
          {{- toYaml $b.securityContext | nindent 10 }}
        volumeMounts:
          {{- include "tritonkit.batch.volumeMounts" . | nindent 10 }}
    volumes:
      {{- include "tritonkit.batch.volumes" . | nindent 6 }}
{{- end }}
