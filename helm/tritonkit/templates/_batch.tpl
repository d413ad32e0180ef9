{{/*
Job spec shared by the one-off Job and the CronJob: an Indexed Job with one completion per shard, each pod
running `tritonkit score` on shard $(JOB_COMPLETION_INDEX) of batch.shards against this release's Triton.
*/}}
{{- define "tritonkit.batch.jobSpec" -}}
{{- $b := .Values.batch }}
{{- $shards := int $b.shards }}
{{- $output := trimSuffix "/" (required "batch.output is required when batch.enabled" $b.output) }}
completionMode: Indexed
completions: {{ $shards }}
parallelism: {{ min (int $b.parallelism) $shards }}
backoffLimit: {{ $b.backoffLimit }}
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
    restartPolicy: Never
    automountServiceAccountToken: false
    {{- with .Values.imagePullSecrets }}
    imagePullSecrets:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    securityContext:
      {{- toYaml $b.podSecurityContext | nindent 6 }}
    containers:
      - name: score
        image: "{{ $b.image.repository }}:{{ default .Chart.AppVersion $b.image.tag }}"
        imagePullPolicy: {{ $b.image.pullPolicy }}
        # The image's entrypoint is `tritonkit`; Kubernetes expands $(JOB_COMPLETION_INDEX) from env below.
        args:
          - score
          - --model
          - {{ required "batch.model is required when batch.enabled" $b.model | quote }}
          - --input
          - {{ required "batch.input is required when batch.enabled" $b.input | quote }}
          - --output
          - {{ printf "%s/shard-$(JOB_COMPLETION_INDEX)" $output | quote }}
          - --url
          - {{ include "tritonkit.grpcAddress" . | quote }}
          - --shard
          - {{ printf "$(JOB_COMPLETION_INDEX)/%d" $shards | quote }}
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
          - name: HOME
            value: /tmp
          {{- with $b.env }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        {{- with $b.envFrom }}
        envFrom:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        {{- with $b.resources }}
        resources:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        securityContext:
          {{- toYaml $b.securityContext | nindent 10 }}
        volumeMounts:
          - name: tmp
            mountPath: /tmp
          {{- if $b.dataVolume.existingClaim }}
          - name: data
            mountPath: {{ $b.dataVolume.mountPath }}
          {{- end }}
    volumes:
      - name: tmp
        emptyDir: {}
      {{- with $b.dataVolume.existingClaim }}
      - name: data
        persistentVolumeClaim:
          claimName: {{ . }}
      {{- end }}
    {{- with $b.nodeSelector }}
    nodeSelector:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with $b.tolerations }}
    tolerations:
      {{- toYaml . | nindent 6 }}
    {{- end }}
{{- end }}
