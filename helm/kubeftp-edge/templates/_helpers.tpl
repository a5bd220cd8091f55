{{/*
Names and labels shared by every template. Names are cut to 63 characters (DNS label limit).
*/}}

{{- define "kubeftp-edge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kubeftp-edge.fullname" -}}
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

{{- define "kubeftp-edge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels; the selector labels plus the component go on top. */}}
{{- define "kubeftp-edge.labels" -}}
helm.sh/chart: {{ include "kubeftp-edge.chart" . }}
{{ include "kubeftp-edge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubeftp-edge
{{- end }}

{{- define "kubeftp-edge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubeftp-edge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The watcher's selector: the FTP server's pods must not match it. */}}
{{- define "kubeftp-edge.watcherSelectorLabels" -}}
{{ include "kubeftp-edge.selectorLabels" . }}
app.kubernetes.io/component: watcher
{{- end }}

{{- define "kubeftp-edge.ftpSelectorLabels" -}}
{{ include "kubeftp-edge.selectorLabels" . }}
app.kubernetes.io/component: ftp-server
{{- end }}

{{- define "kubeftp-edge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubeftp-edge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kubeftp-edge.leaseName" -}}
{{- default (include "kubeftp-edge.fullname" .) .Values.watcher.leaderElection.leaseName }}
{{- end }}

{{- define "kubeftp-edge.stateConfigMap" -}}
{{- default (printf "%s-state" (include "kubeftp-edge.fullname" .)) .Values.watcher.stateConfigMap }}
{{- end }}

{{- define "kubeftp-edge.inventoryConfigMap" -}}
{{- printf "%s-inventory" (include "kubeftp-edge.fullname" .) }}
{{- end }}

{{- define "kubeftp-edge.sshSecretName" -}}
{{- default (printf "%s-ssh" (include "kubeftp-edge.fullname" .)) .Values.ssh.existingSecret }}
{{- end }}

{{- define "kubeftp-edge.ftpFullname" -}}
{{- printf "%s-ftp" (include "kubeftp-edge.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kubeftp-edge.ftpCredentialsSecret" -}}
{{- default (printf "%s-credentials" (include "kubeftp-edge.ftpFullname" .)) .Values.ftpServer.credentials.existingSecret }}
{{- end }}

{{- define "kubeftp-edge.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The Ansible inventory as a YAML document: group `edge` with every host, one child group per
name in the hosts' `groups`. Built as data and serialised with toYaml, so no value can break
out of its field. The connection keys are set last: per-host vars cannot redirect SSH.
*/}}
{{- define "kubeftp-edge.inventory" -}}
{{- $hosts := dict }}
{{- $children := dict }}
{{- range .Values.edge.hosts }}
{{- if hasKey $hosts .name }}
{{- fail (printf "edge.hosts: host %q is listed twice" .name) }}
{{- end }}
{{- $h := deepCopy (default dict .vars) }}
{{- $_ := set $h "ansible_host" .address }}
{{- $_ = set $h "ansible_user" (default $.Values.edge.user .user) }}
{{- $_ = set $h "ansible_port" (int (default $.Values.edge.port .port)) }}
{{- $_ = set $hosts .name $h }}
{{- end }}
{{- range $h := .Values.edge.hosts }}
{{- range $g := $h.groups }}
{{- $group := get $children $g | default (dict "hosts" dict) }}
{{- $_ := set $group.hosts $h.name dict }}
{{- $_ = set $children $g $group }}
{{- end }}
{{- end }}
{{- $edge := dict "hosts" $hosts }}
{{- with .Values.edge.vars }}
{{- $_ := set $edge "vars" . }}
{{- end }}
{{- if $children }}
{{- $_ := set $edge "children" $children }}
{{- end }}
{{- toYaml (dict "all" (dict "children" (dict "edge" $edge))) }}
{{- end }}
