{{/* Names and labels. */}}
{{- define "nmc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "nmc.fullname" -}}
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

{{- define "nmc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nmc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "nmc.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "nmc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nmc
{{- end -}}

{{- define "nmc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "nmc.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image reference: digest over tag, tag defaults to appVersion, never `latest`. */}}
{{- define "nmc.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if eq $tag "latest" -}}
{{- fail "image.tag must name a version, not `latest` (a rollout must know what it runs)" -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The grace period Kubernetes gives after SIGTERM: longer than shutdown_grace_secs. */}}
{{- define "nmc.terminationGrace" -}}
{{- $shutdown := int64 .Values.config.shutdown_grace_secs -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add $shutdown 15 -}}
{{- else -}}
{{- $grace := int64 .Values.terminationGracePeriodSeconds -}}
{{- if le $grace $shutdown -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than config.shutdown_grace_secs (%d): otherwise Kubernetes kills a node before it has handed its forces off" $grace $shutdown) -}}
{{- end -}}
{{- $grace -}}
{{- end -}}
{{- end -}}

{{/* One TOML value: integers without a fraction (Helm reads numbers as floats), strings and
     list items JSON-quoted (valid TOML basic strings). */}}
{{- define "nmc.tomlValue" -}}
{{- $v := . -}}
{{- if kindIs "bool" $v -}}{{ $v }}
{{- else if or (kindIs "float64" $v) (kindIs "int" $v) (kindIs "int64" $v) -}}{{ int64 $v }}
{{- else if kindIs "slice" $v -}}[{{ range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "nmc.tomlValue" $e }}{{ end }}]
{{- else -}}{{ toJson (toString $v) }}
{{- end -}}
{{- end -}}

{{/* The node configuration as TOML: scalars and lists first, then one table per map. */}}
{{- define "nmc.toml" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $_ := set $cfg "nats_url" .Values.nats.url -}}
{{- $_ := set $cfg "nats_inbox_prefix" .Values.nats.inboxPrefix -}}
{{- $_ := set $cfg "nats_user" .Values.nats.auth.user -}}
{{- $_ := set $cfg "require_tls" .Values.nats.tls.requireTls -}}
{{- $_ := set $cfg "data_dir" "/var/lib/nmc" -}}
{{- $_ := set $cfg "http_listen" (printf "0.0.0.0:%d" (int64 .Values.http.port)) -}}
{{- $_ := set $cfg "notify" .Values.notify.enabled -}}
{{- if .Values.notify.enabled -}}
{{- $n := deepCopy .Values.notify.settings -}}
{{- if .Values.notify.smtpCa.existingSecret -}}
{{- $_ := set $n "smtp_tls_ca" (printf "/etc/nmc-secrets/smtp-ca/%s" .Values.notify.smtpCa.key) -}}
{{- end -}}
{{- if .Values.notify.webhookSecrets.existingSecret -}}
{{- $_ := set $n "secrets_dir" "/etc/nmc-secrets/webhooks" -}}
{{- end -}}
{{- if or .Values.notify.templates.configMap .Values.notify.templates.perForce -}}
{{- $_ := set $n "templates_dir" "/etc/nmc-templates" -}}
{{- end -}}
{{- $_ := set $cfg "notifications" $n -}}
{{- end -}}
# nmc node configuration rendered by the nmc chart ({{ .Chart.Version }}). node_id comes from the
# pod name (NMC_NODE_ID); credentials, TLS files and tokens from NMC_* variables.
{{- range $k := keys $cfg | sortAlpha }}
{{- $v := get $cfg $k }}
{{- if not (kindIs "map" $v) }}
{{ $k }} = {{ include "nmc.tomlValue" $v }}
{{- end }}
{{- end }}
{{- range $k := keys $cfg | sortAlpha }}
{{- $v := get $cfg $k }}
{{- if kindIs "map" $v }}

[{{ $k }}]
{{- range $mk := keys $v | sortAlpha }}
{{ toJson $mk }} = {{ include "nmc.tomlValue" (get $v $mk) }}
{{- end }}
{{- end }}
{{- end }}
{{ end -}}

{{/* At most one credential per identity. Argument: (list auth "values.path"). */}}
{{- define "nmc.checkAuth" -}}
{{- $auth := index . 0 -}}
{{- $path := index . 1 -}}
{{- $set := list -}}
{{- if $auth.nkey.existingSecret }}{{ $set = append $set "nkey" }}{{ end -}}
{{- if $auth.creds.existingSecret }}{{ $set = append $set "creds" }}{{ end -}}
{{- if $auth.password.existingSecret }}{{ $set = append $set "password" }}{{ end -}}
{{- if $auth.token.existingSecret }}{{ $set = append $set "token" }}{{ end -}}
{{- if gt (len $set) 1 -}}
{{- fail (printf "%s: set at most one credential, not %s" $path (join " and " $set)) -}}
{{- end -}}
{{- if and $auth.password.existingSecret (not $auth.user) -}}
{{- fail (printf "%s.password needs %s.user" $path $path) -}}
{{- end -}}
{{- if and $auth.user (not $auth.password.existingSecret) -}}
{{- fail (printf "%s.user needs %s.password.existingSecret (the Secret with its password)" $path $path) -}}
{{- end -}}
{{- end -}}

{{/* Env of an identity's credential and the NATS TLS files. Argument: (list auth ctx). */}}
{{- define "nmc.natsEnv" -}}
{{- $auth := index . 0 -}}
{{- $ctx := index . 1 -}}
{{- if $auth.nkey.existingSecret }}
- name: NMC_NATS_NKEY
{{- if $auth.nkey.perNode }}
  # Each pod its own seed (`nmc auth nats-config --nodes <pod names>`); NMC_NODE_ID is set above.
  value: /etc/nmc-secrets/nats-nkey/node-$(NMC_NODE_ID).nk
{{- else }}
  value: /etc/nmc-secrets/nats-nkey/{{ $auth.nkey.key }}
{{- end }}
{{- end }}
{{- if $auth.creds.existingSecret }}
- name: NMC_NATS_CREDS
  value: /etc/nmc-secrets/nats-creds/{{ $auth.creds.key }}
{{- end }}
{{- if $auth.user }}
- name: NMC_NATS_USER
  value: {{ $auth.user | quote }}
{{- end }}
{{- if $auth.password.existingSecret }}
- name: NMC_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $auth.password.existingSecret }}
      key: {{ $auth.password.key }}
{{- end }}
{{- if $auth.token.existingSecret }}
- name: NMC_NATS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $auth.token.existingSecret }}
      key: {{ $auth.token.key }}
{{- end }}
{{- with $ctx.Values.nats.tls }}
{{- if .ca.existingSecret }}
- name: NMC_NATS_TLS_CA
  value: /etc/nmc-secrets/nats-ca/{{ .ca.key }}
{{- end }}
{{- if .clientCert.existingSecret }}
- name: NMC_NATS_TLS_CERT
  value: /etc/nmc-secrets/nats-client/{{ .clientCert.certKey }}
- name: NMC_NATS_TLS_KEY
  value: /etc/nmc-secrets/nats-client/{{ .clientCert.keyKey }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Volumes for nmc.natsEnv's files. Argument: (list auth ctx). */}}
{{- define "nmc.natsVolumes" -}}
{{- $auth := index . 0 -}}
{{- $ctx := index . 1 -}}
{{- if $auth.nkey.existingSecret }}
- name: nats-nkey
  secret:
    secretName: {{ $auth.nkey.existingSecret }}
    defaultMode: 0440
    {{- if not $auth.nkey.perNode }}
    items: [{key: {{ $auth.nkey.key | quote }}, path: {{ $auth.nkey.key | quote }}}]
    {{- end }}
{{- end }}
{{- if $auth.creds.existingSecret }}
- name: nats-creds
  secret:
    secretName: {{ $auth.creds.existingSecret }}
    defaultMode: 0440
    items: [{key: {{ $auth.creds.key | quote }}, path: {{ $auth.creds.key | quote }}}]
{{- end }}
{{- with $ctx.Values.nats.tls }}
{{- if .ca.existingSecret }}
- name: nats-ca
  secret:
    secretName: {{ .ca.existingSecret }}
    defaultMode: 0444
    items: [{key: {{ .ca.key | quote }}, path: {{ .ca.key | quote }}}]
{{- end }}
{{- if .clientCert.existingSecret }}
- name: nats-client
  secret:
    secretName: {{ .clientCert.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- end -}}

{{- define "nmc.natsMounts" -}}
{{- $auth := index . 0 -}}
{{- $ctx := index . 1 -}}
{{- if $auth.nkey.existingSecret }}
- {name: nats-nkey, mountPath: /etc/nmc-secrets/nats-nkey, readOnly: true}
{{- end }}
{{- if $auth.creds.existingSecret }}
- {name: nats-creds, mountPath: /etc/nmc-secrets/nats-creds, readOnly: true}
{{- end }}
{{- if $ctx.Values.nats.tls.ca.existingSecret }}
- {name: nats-ca, mountPath: /etc/nmc-secrets/nats-ca, readOnly: true}
{{- end }}
{{- if $ctx.Values.nats.tls.clientCert.existingSecret }}
- {name: nats-client, mountPath: /etc/nmc-secrets/nats-client, readOnly: true}
{{- end }}
{{- end -}}

{{/* Pod and container security contexts shared by the nodes and the Job. */}}
{{- define "nmc.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsUser }}
fsGroup: {{ .Values.runAsUser }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "nmc.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsUser }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
