{{/*
Object names: the release name, or release-paddock when the release name does not say paddock. With
the release named paddock the names are deploy/kubernetes's (paddock-controller, paddock-node).
*/}}
{{- define "paddock.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selector labels: the base's two and the release, so two releases in one namespace never mix. */}}
{{- define "paddock.selectorLabels" -}}
app.kubernetes.io/name: paddock
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every object: the selector labels and Helm's. */}}
{{- define "paddock.labels" -}}
{{ include "paddock.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Paddock's image: repository:tag, or repository@digest. */}}
{{- define "paddock.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* host:port for --http-endpoint from a metrics value (bindAddress, port); IPv6 in brackets. */}}
{{- define "paddock.listen" -}}
{{- if contains ":" .bindAddress -}}
[{{ .bindAddress }}]:{{ .port }}
{{- else -}}
{{ .bindAddress }}:{{ .port }}
{{- end -}}
{{- end -}}

{{/*
The host kubelet's probes go to: a loopback bind address is the node's own loopback (kubelet runs on
the node, and a pod on the host network shares it); any other goes to the pod IP (the default).
*/}}
{{- define "paddock.probeHost" -}}
{{- if or (eq .bindAddress "127.0.0.1") (eq .bindAddress "::1") -}}
host: {{ .bindAddress | quote }}
{{- end -}}
{{- end -}}

{{/* The CSI socket's path on the host, for kubelet. */}}
{{- define "paddock.pluginDir" -}}
{{ .Values.kubeletDir }}/plugins/{{ .Values.driverName }}
{{- end -}}
