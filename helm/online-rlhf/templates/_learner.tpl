{{/*
The two learners (reward-trainer, ppo-learner) share one shape: a single
replica (each is the only writer of its kind of model version), Recreate
strategy (never two writers, and a ReadWriteOnce volume can move), HTTP
/healthz and /readyz probes on the metrics port, a Service for scraping and
an optional PersistentVolumeClaim for the state directory.

Call with (dict "root" $ "component" "reward-trainer" "values" .Values.rewardTrainer "command" (list ...)),
plus optional "initCommand" (a list: one init container running it with the same
settings and volumes) and "shm" (size of a memory-backed /dev/shm).
*/}}

{{- define "online-rlhf.learner" -}}
{{- $root := .root }}
{{- $v := .values }}
{{- $c := dict "root" $root "component" .component }}
{{- $name := include "online-rlhf.componentName" $c }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "online-rlhf.componentLabels" $c | nindent 4 }}
spec:
  replicas: {{ $v.replicaCount }}
  revisionHistoryLimit: 5
  strategy:
    type: Recreate
  selector:
    matchLabels:
      {{- include "online-rlhf.componentSelectorLabels" $c | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "online-rlhf.componentLabels" $c | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        {{- include "online-rlhf.configChecksums" $root | nindent 8 }}
        {{- with include "online-rlhf.scrapeAnnotations" (dict "root" $root "port" $v.metricsPort) | trim }}{{ nindent 8 . }}{{ end }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- include "online-rlhf.podCommon" $root | nindent 6 }}
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      {{- with include "online-rlhf.scheduling" $v | trim }}{{ nindent 6 . }}{{ end }}
      {{- if .initCommand }}
      initContainers:
        - name: init
          image: {{ include "online-rlhf.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command:
            {{- toYaml .initCommand | nindent 12 }}
          envFrom:
            {{- include "online-rlhf.envFrom" $root | nindent 12 }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "online-rlhf.writableMounts" $root | nindent 12 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "online-rlhf.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command:
            {{- toYaml .command | nindent 12 }}
          {{- with $v.extraArgs }}
          args:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          ports:
            - name: metrics
              containerPort: {{ $v.metricsPort }}
              protocol: TCP
          envFrom:
            {{- include "online-rlhf.envFrom" $root | nindent 12 }}
          {{- with $v.env }}
          env:
            {{- include "online-rlhf.envList" . | trim | nindent 12 }}
          {{- end }}
          startupProbe:
            httpGet:
              path: /healthz
              port: metrics
            periodSeconds: 5
            failureThreshold: 60
          livenessProbe:
            httpGet:
              path: /healthz
              port: metrics
            periodSeconds: 10
            failureThreshold: 6
          readinessProbe:
            httpGet:
              path: /readyz
              port: metrics
            periodSeconds: 10
            failureThreshold: 3
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "online-rlhf.writableMounts" $root | nindent 12 }}
            {{- if .shm }}
            - name: dshm
              mountPath: /dev/shm
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ $root.Values.tmpSizeLimit }}
        - name: state
          {{- if $v.persistence.enabled }}
          persistentVolumeClaim:
            claimName: {{ $v.persistence.existingClaim | default $name }}
          {{- else }}
          emptyDir: {}
          {{- end }}
        {{- if .shm }}
        - name: dshm
          emptyDir:
            medium: Memory
            sizeLimit: {{ .shm }}
        {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  labels:
    {{- include "online-rlhf.componentLabels" $c | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "online-rlhf.componentSelectorLabels" $c | nindent 4 }}
  ports:
    - name: metrics
      port: {{ $v.metricsPort }}
      targetPort: metrics
      protocol: TCP
{{- if and $v.persistence.enabled (not $v.persistence.existingClaim) }}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ $name }}
  labels:
    {{- include "online-rlhf.componentLabels" $c | nindent 4 }}
  annotations:
    # Keep learned state when the release is uninstalled.
    helm.sh/resource-policy: keep
spec:
  accessModes: [ReadWriteOnce]
  {{- with $v.persistence.storageClass }}
  storageClassName: {{ . }}
  {{- end }}
  resources:
    requests:
      storage: {{ $v.persistence.size }}
{{- end }}
{{- end }}
