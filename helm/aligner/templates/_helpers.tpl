{{/* Names and labels. */}}
{{- define "aligner.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aligner.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "aligner.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aligner.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "aligner.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "aligner.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "aligner.secretName" -}}
{{- default (printf "%s-secrets" (include "aligner.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{- define "aligner.image" -}}
{{- printf "%s:%s" .Values.image.repository (default (printf "%s-%s" .Chart.AppVersion .Values.image.flavor) .Values.image.tag) }}
{{- end }}

{{/*
The app's ServerConfig (the `args` of build_app): the `server` values, with the host, the ports and
the tenant store set by the chart. tenant_store stays unset: every pod reads it from the Secret
($ALIGNER_TENANT_STORE), so the URL never appears in the RayService.
*/}}
{{- define "aligner.serverConfig" -}}
{{- $owned := dict "http_host" "0.0.0.0" "http_port" (int .Values.ports.http) "grpc_port" (int .Values.ports.grpc) "app_name" "aligner" }}
{{- toJson (merge $owned (deepCopy .Values.server)) }}
{{- end }}

{{/* Environment of every Ray container: the tenant store, its password, the bootstrap admin key. */}}
{{- define "aligner.env" -}}
- name: ALIGNER_TENANT_STORE
  valueFrom:
    secretKeyRef:
      name: {{ include "aligner.secretName" . }}
      key: tenant-store-url
- name: ALIGNER_ADMIN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "aligner.secretName" . }}
      key: admin-key
{{- with .Values.tenantStore.passwordSecret }}
{{- if .name }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .key }}
{{- end }}
{{- end }}
- name: HF_HUB_OFFLINE
  value: "1"
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Mounts of every Ray container: the ServerConfig file (/etc/aligner/aligner.yaml) and Ray's logs. */}}
{{- define "aligner.volumeMounts" -}}
- name: aligner-config
  mountPath: /etc/aligner
  readOnly: true
- name: ray-logs
  mountPath: /tmp/ray
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "aligner.volumes" -}}
- name: aligner-config
  configMap:
    name: {{ include "aligner.fullname" . }}-config
- name: ray-logs
  emptyDir: {}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "aligner.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
{{- end }}

{{- define "aligner.containerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
{{- end }}
