{{/* Names and labels shared by every template. */}}

{{- define "gitops-reverser.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: also the prefix of the shard Leases. */}}
{{- define "gitops-reverser.fullname" -}}
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

{{- define "gitops-reverser.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gitops-reverser.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gitops-reverser.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "gitops-reverser.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gitops-reverser
{{- end }}

{{- define "gitops-reverser.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gitops-reverser.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The digest key Secret of encrypted Secret files, in the release namespace. */}}
{{- define "gitops-reverser.digestKeySecret" -}}
{{- .Values.operator.digestKeySecret | default (printf "%s-sops-digest" (include "gitops-reverser.fullname" .)) -}}
{{- end }}

{{- define "gitops-reverser.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
A Go-style duration ("4s", "1m30s", "500ms") in milliseconds, as the
operator parses it. Fails on anything else.
*/}}
{{- define "gitops-reverser.durationMillis" -}}
{{- $text := toString . }}
{{- if not (regexMatch "^([0-9]+(ms|s|m|h))+$" $text) }}
{{- fail (printf "%q is not a duration like 500ms, 4s or 1m30s" $text) }}
{{- end }}
{{- $total := 0 }}
{{- range regexFindAll "[0-9]+(ms|s|m|h)" $text -1 }}
{{- $number := regexFind "^[0-9]+" . | atoi }}
{{- $unit := trimPrefix (regexFind "^[0-9]+" .) . }}
{{- $factor := get (dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000) $unit }}
{{- $total = add $total (mul $number $factor) }}
{{- end }}
{{- $total }}
{{- end }}

{{/* PromQL matchers that select this installation's series. */}}
{{- define "gitops-reverser.metricSelector" -}}
{{- /* job is the Service's name (a ServiceMonitor's default); namespace is a GitTarget's. */}}
{{- default (printf "job=%q" (include "gitops-reverser.fullname" .)) .Values.prometheusRule.selector }}
{{- end }}

{{/* Checks across values that the schema cannot express. */}}
{{- define "gitops-reverser.validate" -}}
{{- $shutdown := include "gitops-reverser.durationMillis" .Values.operator.shutdownTimeout | int }}
{{- if le (mul .Values.terminationGracePeriodSeconds 1000 | int) $shutdown }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be longer than operator.shutdownTimeout (%s)" .Values.terminationGracePeriodSeconds .Values.operator.shutdownTimeout) }}
{{- end }}
{{- if and .Values.rbac.secretNamespaces (not .Values.rbac.readSecrets) }}
{{- fail "rbac.secretNamespaces lists namespaces whose Secrets may be read, but rbac.readSecrets is false: set one or the other" }}
{{- end }}
{{- /* The operator's own checks at start (src/shard/settings.rs). */}}
{{- $lease := include "gitops-reverser.durationMillis" .Values.ha.leaseDuration | int }}
{{- $renew := include "gitops-reverser.durationMillis" .Values.ha.renewDeadline | int }}
{{- $retry := include "gitops-reverser.durationMillis" .Values.ha.retryPeriod | int }}
{{- if le $lease $renew }}
{{- fail (printf "ha: leaseDuration (%s) must be longer than renewDeadline (%s)" .Values.ha.leaseDuration .Values.ha.renewDeadline) }}
{{- end }}
{{- if le (mul $renew 5) (mul $retry 6) }}
{{- fail (printf "ha: renewDeadline (%s) must be longer than 1.2 x retryPeriod (%s)" .Values.ha.renewDeadline .Values.ha.retryPeriod) }}
{{- end }}
{{- if lt $shutdown 4000 }}
{{- fail (printf "operator.shutdownTimeout (%s) must be at least 4s: 2s to commit and push what a replica holds, 2s to release its shard Leases" .Values.operator.shutdownTimeout) }}
{{- end }}
{{- if ge (add $retry 1000) $lease }}
{{- fail (printf "ha: retryPeriod (%s) + 1s must be shorter than leaseDuration (%s), or pushes could not start between renewals" .Values.ha.retryPeriod .Values.ha.leaseDuration) }}
{{- end }}
{{- end }}

{{/* OTEL_RESOURCE_ATTRIBUTES: the pod's identity plus the configured attributes. */}}
{{- define "gitops-reverser.resourceAttributes" -}}
{{- $attributes := list "k8s.pod.name=$(POD_NAME)" "k8s.namespace.name=$(POD_NAMESPACE)" }}
{{- range $key, $value := .Values.opentelemetry.resourceAttributes }}
{{- $attributes = append $attributes (printf "%s=%v" $key $value) }}
{{- end }}
{{- join "," $attributes }}
{{- end }}

{{/* The TCP port of opentelemetry.endpoint (from the URL, else the scheme's); empty without an endpoint. */}}
{{- define "gitops-reverser.otlpPort" -}}
{{- with .Values.opentelemetry.endpoint }}
{{- $url := urlParse . }}
{{- $port := regexFind ":[0-9]+$" $url.host | trimPrefix ":" }}
{{- default (ternary "443" "80" (eq $url.scheme "https")) $port }}
{{- end }}
{{- end }}
