{{/*
Helpers of the online-rlhf chart. Every name is namespaced "online-rlhf." so
this chart can be used as a subchart without clashing with its parent.
*/}}

{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "online-rlhf.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: release-chart, or the release name alone when it
already contains the chart name.
*/}}
{{- define "online-rlhf.fullname" -}}
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

{{/* Name of one component's objects: <fullname>-<component>, e.g. rl-online-rlhf-inference. */}}
{{- define "online-rlhf.componentName" -}}
{{- printf "%s-%s" (include "online-rlhf.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* chart label value: name-version. */}}
{{- define "online-rlhf.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "online-rlhf.labels" -}}
helm.sh/chart: {{ include "online-rlhf.chart" . }}
{{ include "online-rlhf.selectorLabels" . }}
app.kubernetes.io/part-of: online-rlhf
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels shared by all components of one release. */}}
{{- define "online-rlhf.selectorLabels" -}}
app.kubernetes.io/name: {{ include "online-rlhf.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component (call with dict "root" $ "component" "inference"). */}}
{{- define "online-rlhf.componentLabels" -}}
{{ include "online-rlhf.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Selector labels of one component. */}}
{{- define "online-rlhf.componentSelectorLabels" -}}
{{ include "online-rlhf.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Service account the pods run as. */}}
{{- define "online-rlhf.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "online-rlhf.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference; the tag defaults to the chart's appVersion. A digest wins over the tag. */}}
{{- define "online-rlhf.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* ConfigMap holding the non-secret settings (environment variables) of every component. */}}
{{- define "online-rlhf.configMapName" -}}
{{- printf "%s-config" (include "online-rlhf.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Secret holding REDIS_URL and the other secret settings (the operator's own, if named). */}}
{{- define "online-rlhf.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- printf "%s-secret" (include "online-rlhf.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Pod-level pieces every component shares: service account, pull secrets,
pod security context, settings from the ConfigMap and the Secret.
*/}}
{{- define "online-rlhf.podCommon" -}}
serviceAccountName: {{ include "online-rlhf.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* envFrom of every container: shared ConfigMap, then the Secret. */}}
{{- define "online-rlhf.envFrom" -}}
- configMapRef:
    name: {{ include "online-rlhf.configMapName" . }}
- secretRef:
    name: {{ include "online-rlhf.secretName" . }}
{{- end }}

{{/*
Annotations that roll the pods when the settings change (a ConfigMap or
Secret edit is otherwise invisible to a running Deployment).
*/}}
{{- define "online-rlhf.configChecksums" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if not .Values.secrets.existingSecret }}
checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end }}

{{/* Map of env vars -> container env list (values are strings; keys sorted for stable output). */}}
{{- define "online-rlhf.envList" -}}
{{- range $k, $v := . }}
- name: {{ $k }}
  value: {{ $v | toString | quote }}
{{- end }}
{{- end }}

{{/*
Writable paths under a read-only root filesystem: /tmp (caches) and the
service's state directory (spool, checkpoints). emptyDir by default.
*/}}
{{- define "online-rlhf.writableMounts" -}}
- name: tmp
  mountPath: /tmp
- name: state
  mountPath: {{ .Values.stateDir }}
{{- end }}

{{/* Scheduling fields of one component's pod spec (call with the component's values). */}}
{{- define "online-rlhf.scheduling" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* prometheus.io/* pod annotations for a Prometheus that discovers pods by annotation. */}}
{{- define "online-rlhf.scrapeAnnotations" -}}
{{- if .root.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}
