{{/* Names. */}}
{{- define "boxgrid.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "boxgrid.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "boxgrid.server.fullname" -}}{{ include "boxgrid.fullname" . | trunc 56 | trimSuffix "-" }}-server{{- end -}}
{{- define "boxgrid.executor.fullname" -}}{{ include "boxgrid.fullname" . | trunc 54 | trimSuffix "-" }}-executor{{- end -}}
{{- define "boxgrid.postgresql.fullname" -}}{{ include "boxgrid.fullname" . | trunc 52 | trimSuffix "-" }}-postgresql{{- end -}}
{{/* The Secret holding the servers' transfer key: the operator's, or the one the chart makes. */}}
{{- define "boxgrid.server.transferKeySecret" -}}
{{- default (printf "%s-transfer-key" (include "boxgrid.server.fullname" .)) .Values.server.transferKey.existingSecret -}}
{{- end -}}

{{/* Labels: every object; selector labels: what a Deployment, Service or NetworkPolicy selects by (with a component). */}}
{{- define "boxgrid.selectorLabels" -}}
app.kubernetes.io/name: {{ include "boxgrid.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "boxgrid.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "boxgrid.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* boxgrid's image: by digest when one is given, else by tag (default: the chart's appVersion). */}}
{{- define "boxgrid.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The namespace the executor's task Jobs go to. */}}
{{- define "boxgrid.jobNamespace" -}}
{{- default .Release.Namespace .Values.executor.jobNamespace -}}
{{- end -}}

{{/* The executor's --name: the label on its Jobs. */}}
{{- define "boxgrid.executorName" -}}
{{- default (include "boxgrid.fullname" . | trunc 40 | trimSuffix "-") .Values.executor.name -}}
{{- end -}}

{{/* The server URL the executor uses (and its task pods, unless executor.transferServer). */}}
{{- define "boxgrid.serverUrl" -}}
{{- if .Values.executor.server -}}
{{- .Values.executor.server -}}
{{- else if .Values.server.enabled -}}
{{- printf "http://%s.%s.svc:%v" (include "boxgrid.server.fullname" .) .Release.Namespace .Values.server.service.port -}}
{{- else -}}
{{- required "executor.server is required when server.enabled=false: the URL of the boxgrid server the executor joins" .Values.executor.server -}}
{{- end -}}
{{- end -}}

{{/*
Security contexts. Not values on purpose: the tests (test/deploy/) hold every container of the
chart to these. Only the uid and gid can be changed.
*/}}
{{- define "boxgrid.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .gid }}
fsGroup: {{ .gid }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "boxgrid.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .gid }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Checks of value combinations that would render manifests that cannot work. Included by
templates/validate.yaml, so that every render runs them.
*/}}
{{- define "boxgrid.validate" -}}
{{- $s := .Values.server -}}
{{- if and $s.enabled (not .Values.postgresql.enabled) -}}
{{- $_ := required "externalDatabase.existingSecret is required when postgresql.enabled=false: the name of a Secret holding the server's postgres:// URL (key externalDatabase.urlKey, default \"url\")" .Values.externalDatabase.existingSecret -}}
{{- end -}}
{{- if and .Values.postgresql.enabled (not $s.enabled) -}}
{{- fail "postgresql.enabled=true needs server.enabled=true: only the server uses the database (set postgresql.enabled=false for an executor alone)" -}}
{{- end -}}
{{- if and .Values.postgresql.enabled .Values.externalDatabase.existingSecret -}}
{{- fail "postgresql.enabled=true and externalDatabase.existingSecret are both set: choose one database (set postgresql.enabled=false to use the external one)" -}}
{{- end -}}
{{- if and $s.enabled (gt (int $s.replicas) 1) (not (hasPrefix "s3://" (toString $s.blobs))) -}}
{{- fail (printf "server.replicas=%v needs blobs every server shares: set server.blobs to an s3://BUCKET[/PREFIX] URL (the data volume is one pod's)" $s.replicas) -}}
{{- end -}}
{{- if and $s.enabled (lt (int $s.replicas) 1) -}}
{{- fail "server.replicas must be at least 1 (set server.enabled=false for no server)" -}}
{{- end -}}
{{- if and .Values.executor.enabled .Values.networkPolicy.enabled (not $s.enabled) -}}
{{- $_ := required "networkPolicy.tasks.serverCIDR is required when server.enabled=false and networkPolicy.enabled=true: the address block (e.g. 203.0.113.10/32) of the server the task pods stage files through" .Values.networkPolicy.tasks.serverCIDR -}}
{{- end -}}
{{- if and .Values.executor.enabled (not $s.enabled) (not .Values.executor.server) -}}
{{- $_ := required "executor.server is required when server.enabled=false: the URL of the boxgrid server the executor joins" .Values.executor.server -}}
{{- end -}}
{{- if not (kindIs "slice" (default (list) .Values.executor.taskTolerations)) -}}
{{- fail "executor.taskTolerations must be a list of key=value:Effect strings" -}}
{{- end -}}
{{- if not (kindIs "map" (default (dict) .Values.executor.taskNodeSelector)) -}}
{{- fail "executor.taskNodeSelector must be a map of node labels" -}}
{{- end -}}
{{- if .Values.executor.enabled -}}
{{- $name := include "boxgrid.executorName" . -}}
{{- if not (regexMatch "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$" $name) -}}
{{- fail (printf "executor.name %q must be 1-40 lower-case letters, digits or \"-\", starting and ending with a letter or digit (it names Jobs and labels)" $name) -}}
{{- end -}}
{{- if not (gt (float64 .Values.executor.maxCores) 0.0) -}}
{{- fail "executor.maxCores must be a number above 0" -}}
{{- end -}}
{{- end -}}
{{- range .Values.executor.taskTolerations -}}
{{- if not (regexMatch "^[^=:]+(=[^:]*)?:(NoSchedule|PreferNoSchedule|NoExecute)$" .) -}}
{{- fail (printf "executor.taskTolerations: %q is not key=value:Effect or key:Effect (Effect: NoSchedule, PreferNoSchedule or NoExecute)" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
