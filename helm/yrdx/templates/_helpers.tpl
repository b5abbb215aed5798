{{/*
Names, labels and the gateway.yaml the chart renders. Everything that is derived from the values
(region, topic segment, secret names, file paths) is computed here, once, and used by the templates.
*/}}

{{- define "yrdx.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the release name when it already contains the chart name (yrdx-sh), else
"<release>-<chart>". Truncated to 63 characters, the limit of a DNS label.
*/}}
{{- define "yrdx.fullname" -}}
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

{{- define "yrdx.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The region code, checked: SH, JS, ZJ or AH (DESIGN.md section 1). */}}
{{- define "yrdx.region" -}}
{{- $region := .Values.region | toString }}
{{- if not (has $region (list "SH" "JS" "ZJ" "AH")) }}
{{- fail (printf "region must be one of SH, JS, ZJ, AH (got %q)" $region) }}
{{- end }}
{{- $region }}
{{- end }}

{{/* The region's topic segment: yrdx.<seg>.inbox, yrdx.<seg>.dlq, consumer group yrdx-<seg>. */}}
{{- define "yrdx.segment" -}}
{{- include "yrdx.region" . | lower }}
{{- end }}

{{/* The prefix of every topic and group name: "<kafka.namespace>." or nothing. */}}
{{- define "yrdx.topicPrefix" -}}
{{- with .Values.kafka.namespace }}{{ . }}.{{ end }}
{{- end }}

{{- define "yrdx.selectorLabels" -}}
app.kubernetes.io/name: {{ include "yrdx.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "yrdx.labels" -}}
helm.sh/chart: {{ include "yrdx.chart" . }}
{{ include "yrdx.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: gateway
app.kubernetes.io/part-of: yrdx
app.kubernetes.io/managed-by: {{ .Release.Service }}
yrdx/region: {{ include "yrdx.region" . }}
{{- end }}

{{- define "yrdx.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "yrdx.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "yrdx.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag | toString }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Names of the existing objects the pod mounts (never created by the chart). */}}
{{- define "yrdx.identitySecret" -}}
{{- default (printf "%s-identity" (include "yrdx.fullname" .)) .Values.identity.existingSecret }}
{{- end }}

{{- define "yrdx.trustSecret" -}}
{{- default "yrdx-trust" .Values.trust.existingSecret }}
{{- end }}

{{- define "yrdx.platformKeysName" -}}
{{- default (printf "%s-platform-keys" (include "yrdx.fullname" .)) .Values.platformKeys.name }}
{{- end }}

{{- define "yrdx.auditorKeysName" -}}
{{- default (printf "%s-auditor-keys" (include "yrdx.fullname" .)) .Values.auditorKeys.name }}
{{- end }}

{{- define "yrdx.filesClaimName" -}}
{{- default (printf "%s-files" (include "yrdx.fullname" .)) .Values.files.persistence.existingClaim }}
{{- end }}

{{- define "yrdx.stateClaimName" -}}
{{- default (printf "%s-state" (include "yrdx.fullname" .)) .Values.state.persistence.existingClaim }}
{{- end }}

{{/* The Kafka security protocol, checked. */}}
{{- define "yrdx.kafkaProtocol" -}}
{{- $p := .Values.kafka.security.protocol | toString }}
{{- if not (has $p (list "PLAINTEXT" "SSL" "SASL_SSL")) }}
{{- fail (printf "kafka.security.protocol must be PLAINTEXT, SSL or SASL_SSL (got %q)" $p) }}
{{- end }}
{{- $p }}
{{- end }}

{{/* "true" when the Kafka connection uses TLS, else empty. */}}
{{- define "yrdx.kafkaTLS" -}}
{{- if has (include "yrdx.kafkaProtocol" .) (list "SSL" "SASL_SSL") }}true{{ end }}
{{- end }}

{{/* "true" when the Kafka connection uses a SASL login, else empty. */}}
{{- define "yrdx.kafkaSASL" -}}
{{- if eq (include "yrdx.kafkaProtocol" .) "SASL_SSL" }}true{{ end }}
{{- end }}

{{/* "true" when the Kafka TLS projected volume has something to mount, else empty. */}}
{{- define "yrdx.kafkaTLSVolume" -}}
{{- if and (include "yrdx.kafkaTLS" .) (or .Values.kafka.tls.caSecret .Values.kafka.tls.clientCertSecret) }}true{{ end }}
{{- end }}

{{/* "true" when the state is in PostgreSQL (state.dsn or state.dsnSecret.name): shared by the replicas. */}}
{{- define "yrdx.stateInPostgres" -}}
{{- if or .Values.state.dsn .Values.state.dsnSecret.name }}true{{ end }}
{{- end }}

{{/* The Secret holding the state DSN: the one named, or the chart's own for state.dsn. */}}
{{- define "yrdx.stateDsnSecret" -}}
{{- default (printf "%s-state" (include "yrdx.fullname" .)) .Values.state.dsnSecret.name }}
{{- end }}

{{/* "true" when the region may run several replicas at once (replicaCount > 1 or an autoscaler). */}}
{{- define "yrdx.replicated" -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled }}true{{ end }}
{{- end }}

{{/* Namespaces of the local platforms: as configured, or the release's own namespace. */}}
{{- define "yrdx.platformNamespaces" -}}
{{- $ns := .Values.networkPolicy.platformNamespaces | default (list .Release.Namespace) }}
{{- toJson $ns }}
{{- end }}

{{/*
Checks across values that a schema cannot express. Included by the Deployment, so a bad
combination stops `helm install` with a message that names the values to change.
*/}}
{{- define "yrdx.validate" -}}
{{- $_ := include "yrdx.region" . }}{{/* fails on an unknown region */}}
{{- $proto := include "yrdx.kafkaProtocol" . }}
{{- if and (include "yrdx.replicated" .) (not (include "yrdx.stateInPostgres" .)) }}
{{- fail "replicaCount > 1 (or autoscaling.enabled) needs state.dsn or state.dsnSecret: the replicas share their dedupe marks, pull inbox, leases and idempotency keys in PostgreSQL, while the embedded SQLite file is one pod's (a message redelivered to another replica would not be recognised as a duplicate)." }}
{{- end }}
{{- if and .Values.autoscaling.enabled (lt (int .Values.autoscaling.maxReplicas) (int .Values.autoscaling.minReplicas)) }}
{{- fail "autoscaling.maxReplicas must be at least autoscaling.minReplicas" }}
{{- end }}
{{- $stateDir := dir .Values.state.path }}
{{- if or (eq $stateDir "/tmp") (hasPrefix "/etc/yrdx" $stateDir) }}
{{- fail (printf "state.path %q: its directory is the state volume's mount point and must not be /tmp or under /etc/yrdx" .Values.state.path) }}
{{- end }}
{{- $f := .Values.files }}
{{- if or (hasPrefix "/etc/yrdx" $f.spoolDir) (hasPrefix "/tmp" $f.spoolDir) (and (not (include "yrdx.stateInPostgres" .)) (or (eq $f.spoolDir $stateDir) (hasPrefix (printf "%s/" $stateDir) $f.spoolDir))) }}
{{- fail (printf "files.spoolDir %q: it is the spool volume's mount point and must not be under /tmp, /etc/yrdx or the state volume's directory" $f.spoolDir) }}
{{- end }}
{{- if and (include "yrdx.replicated" .) (not $f.persistence.enabled) }}
{{- fail "replicaCount > 1 (or autoscaling.enabled) needs files.persistence.enabled with a shared volume: each file is assembled by one replica, and every replica must find it (to deliver the message that claims it, to serve its download)." }}
{{- end }}
{{- if and (include "yrdx.replicated" .) $f.persistence.enabled (not $f.persistence.existingClaim) (not (has "ReadWriteMany" $f.persistence.accessModes)) }}
{{- fail "replicaCount > 1 (or autoscaling.enabled) needs files.persistence.accessModes [ReadWriteMany] (or files.persistence.existingClaim on a shared file system): the replicas share one spool." }}
{{- end }}
{{- if and (eq $proto "SASL_SSL") (not .Values.kafka.sasl.existingSecret) }}
{{- fail "kafka.security.protocol SASL_SSL needs kafka.sasl.existingSecret (the Secret holding the SASL password)." }}
{{- end }}
{{- if and (eq $proto "SASL_SSL") (not (has .Values.kafka.sasl.mechanism (list "SCRAM-SHA-512" "SCRAM-SHA-256" "PLAIN"))) }}
{{- fail (printf "kafka.sasl.mechanism must be SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN (got %q)" .Values.kafka.sasl.mechanism) }}
{{- end }}
{{- range $from, $types := .Values.config.accept }}
{{- if not (has $from (list "SH" "JS" "ZJ" "AH")) }}
{{- fail (printf "config.accept: %q is not a region code (SH, JS, ZJ, AH)" $from) }}
{{- end }}
{{- end }}
{{- range $i, $p := .Values.config.platforms }}
{{- if not (and (kindIs "map" $p) $p.id) }}
{{- fail (printf "config.platforms[%d] needs an id" $i) }}
{{- end }}
{{- end }}
{{- range $i, $a := .Values.config.auditors }}
{{- if not (and (kindIs "map" $a) $a.id) }}
{{- fail (printf "config.auditors[%d] needs an id" $i) }}
{{- end }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.bearerTokenSecret) }}
{{- fail "serviceMonitor.enabled needs metrics.bearerTokenSecret: the gateway answers /metrics only with the operator's bearer token." }}
{{- end }}
{{- if and .Values.networkPolicy.enabled (not (or .Values.networkPolicy.kafka.namespaces .Values.networkPolicy.kafka.cidrs)) }}
{{- fail "networkPolicy.enabled: set networkPolicy.kafka.namespaces or networkPolicy.kafka.cidrs, or the gateway cannot reach Kafka." }}
{{- end }}
{{- end }}

{{/*
gateway.yaml, the config `yrdx serve --config /etc/yrdx/gateway.yaml` reads. Its keys are fixed by
the gateway (README.md of the project); every file path points into a read-only mount of the
Deployment. Top-level keys come out in a fixed order so that the rendered file reads like a
hand-written one.
*/}}
{{- define "yrdx.gatewayConfig" -}}
{{- $region := include "yrdx.region" . }}
{{- $proto := include "yrdx.kafkaProtocol" . }}
{{- $k := .Values.kafka }}
{{- $kafka := dict "bootstrap_servers" $k.bootstrapServers "security_protocol" $proto "sasl_mechanism" nil "ssl_cafile" nil "ssl_certfile" nil "ssl_keyfile" nil "sasl_username_file" nil "sasl_password_file" nil "fetch_max_wait_ms" (int $k.fetchMaxWaitMs) "linger_ms" (int $k.lingerMs) "inbox_partitions" (int $k.inboxPartitions) }}
{{- if $k.namespace }}
{{- $_ := set $kafka "namespace" $k.namespace }}
{{- end }}
{{- if include "yrdx.kafkaTLS" . }}
{{- if $k.tls.caSecret }}
{{- $_ := set $kafka "ssl_cafile" "/etc/yrdx/kafka/tls/ca.crt" }}
{{- end }}
{{- if $k.tls.clientCertSecret }}
{{- $_ := set $kafka "ssl_certfile" "/etc/yrdx/kafka/tls/client.crt" }}
{{- $_ := set $kafka "ssl_keyfile" "/etc/yrdx/kafka/tls/client.key" }}
{{- end }}
{{- end }}
{{- if include "yrdx.kafkaSASL" . }}
{{- $_ := set $kafka "sasl_mechanism" $k.sasl.mechanism }}
{{- $_ := set $kafka "sasl_username_file" "/etc/yrdx/kafka/sasl/username" }}
{{- $_ := set $kafka "sasl_password_file" "/etc/yrdx/kafka/sasl/password" }}
{{- end }}
{{- $ca := list }}
{{- range .Values.trust.caKeys }}
{{- $ca = append $ca (printf "/etc/yrdx/trust/%s" .) }}
{{- end }}
{{- $certs := list }}
{{- range .Values.trust.certificateKeys }}
{{- $certs = append $certs (printf "/etc/yrdx/trust/%s" .) }}
{{- end }}
{{- $platforms := list }}
{{- range .Values.config.platforms }}
{{- $p := deepCopy . }}
{{- if not (hasKey $p "public_key") }}
{{- $_ := set $p "public_key" (printf "/etc/yrdx/platforms/%s.pub.pem" $p.id) }}
{{- end }}
{{- $platforms = append $platforms $p }}
{{- end }}
{{- $auditors := list }}
{{- range .Values.config.auditors }}
{{- $a := deepCopy . }}
{{- if not (hasKey $a "public_key") }}
{{- $_ := set $a "public_key" (printf "/etc/yrdx/auditors/%s.pub.pem" $a.id) }}
{{- end }}
{{- $auditors = append $auditors $a }}
{{- end }}
{{- $identity := dict "certificate" "/etc/yrdx/identity/tls.crt" "private_key" "/etc/yrdx/identity/tls.key" }}
{{- if .Values.identity.encryptionKeyKey }}
{{- $_ := set $identity "encryption_key" "/etc/yrdx/identity/enc.key" }}
{{- end }}
{{- $trust := dict "ca" $ca "certificates" $certs }}
{{- if .Values.trust.encryptionKeys }}
{{- $enc := dict }}
{{- range $r, $k := .Values.trust.encryptionKeys }}
{{- $_ := set $enc $r (printf "/etc/yrdx/trust/%s" $k) }}
{{- end }}
{{- $_ := set $trust "encryption_keys" $enc }}
{{- end }}
{{- $r := .Values.state.retention }}
{{- $retention := dict "days" (int $r.days) "acked_inbox_hours" (int $r.ackedInboxHours) "sweep_interval_s" (int $r.sweepIntervalS) }}
{{- $cfg := dict
  "region" $region
  "listen" (dict "host" .Values.config.listen.host "port" (int .Values.config.listen.port))
  "kafka" $kafka
  "identity" $identity
  "trust" $trust
  "state" (merge (ternary (dict "dsn_file" "/etc/yrdx/state/dsn") (dict "path" .Values.state.path) (not (empty (include "yrdx.stateInPostgres" .)))) (dict "retention" $retention))
  "limits" .Values.config.limits
  "accept" .Values.config.accept
  "platforms" $platforms
  "auditors" $auditors
  "metrics" (dict "bearer_token_file" (ternary "/etc/yrdx/metrics/token" nil (not (empty .Values.metrics.bearerTokenSecret))))
  "files" (dict "spool_dir" .Values.files.spoolDir "max_bytes" (int64 .Values.files.maxBytes) "wait_s" .Values.files.waitS "retention_days" .Values.files.retentionDays)
  "schemas_dir" (.Values.config.schemasDir | default nil)
}}
{{- $order := list "region" "listen" "kafka" "identity" "trust" "state" "files" "limits" "accept" "platforms" "auditors" "metrics" "schemas_dir" }}
{{- range $key := $order }}
{{ toYaml (dict $key (index $cfg $key)) }}
{{- end }}
{{- range $key, $value := .Values.config.extra }}
{{- if hasKey $cfg $key }}
{{- fail (printf "config.extra.%s: the chart renders %q itself; set it through its own value" $key $key) }}
{{- end }}
{{ toYaml (dict $key $value) }}
{{- end }}
{{- end }}
