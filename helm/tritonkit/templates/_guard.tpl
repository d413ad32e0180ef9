{{/*
The guard: a sidecar running `tritonkit guard` (the kit's image) in front of Triton's HTTP endpoint.
Triton 2.51 crashes on one crafted HTTP inference request (a huge JSON shape); the guard checks every
inference request against the model's config before Triton sees it. With guard.enabled, Triton's HTTP
binds 127.0.0.1 only, the pod's port named "http" is the guard's (so the Service, the Ingress and the
NetworkPolicy reach Triton's HTTP API through it), and the kit's metrics are on port "guard-metrics".
*/}}

{{/*
Port Triton's own probes call: through the guard when it runs (Triton's HTTP is on loopback), else Triton's.
*/}}
{{- define "tritonkit.httpProbePort" -}}
{{- if .Values.guard.enabled }}{{ .Values.guard.port }}{{ else }}http{{ end }}
{{- end }}

{{/*
Name of Triton's own HTTP container port: "http" without the guard; with it, "http" is the guard's.
*/}}
{{- define "tritonkit.tritonHttpPortName" -}}
{{- if .Values.guard.enabled }}triton-http{{ else }}http{{ end }}
{{- end }}

{{/*
The guard container (rendered only with guard.enabled).
*/}}
{{- define "tritonkit.guardContainer" -}}
{{- if .Values.guard.enabled }}
{{- $g := .Values.guard -}}
- name: guard
  image: "{{ $g.image.repository }}:{{ default .Chart.AppVersion $g.image.tag }}"
  imagePullPolicy: {{ $g.image.pullPolicy }}
  # The image's entrypoint is `tritonkit`.
  args:
    - guard
    - --upstream=127.0.0.1:8000
    - --listen=0.0.0.0:{{ $g.port }}
    - --metrics-listen=0.0.0.0:{{ $g.metricsPort }}
    - --max-body-bytes={{ int64 $g.maxBodyBytes }}
    - --max-json-bytes={{ int64 $g.maxJsonBytes }}
    - --max-tensor-bytes={{ int64 $g.maxTensorBytes }}
    {{- range $g.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  ports:
    - name: http
      containerPort: {{ $g.port }}
      protocol: TCP
    - name: guard-metrics
      containerPort: {{ $g.metricsPort }}
      protocol: TCP
  # Alive while it accepts connections; ready while Triton behind it is (the health call is forwarded).
  livenessProbe:
    tcpSocket:
      port: http
    periodSeconds: 10
    failureThreshold: 3
  readinessProbe:
    httpGet:
      path: /v2/health/ready
      port: http
    {{- toYaml .Values.probes.readiness | nindent 4 }}
  {{- with $g.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- else }}
  resources: {}
  {{- end }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
{{- end }}
{{- end }}
