{{/*
The chart's name.
*/}}
{{- define "tether.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object's name: "<release>-tether", or the release name if it holds
the chart's name. Short enough for the longest suffix ("-headless") and for the
StatefulSet's pod and claim names.
*/}}
{{- define "tether.fullname" -}}
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

{{/*
The role, checked: the schema already refuses anything else, this names the fix when a
chart is rendered without it.
*/}}
{{- define "tether.role" -}}
{{- if not (has .Values.role (list "core" "edge")) }}
{{- fail "role must be set to \"core\" (HQ) or \"edge\" (a field node): --set role=core, or -f values-core.yaml" }}
{{- end }}
{{- .Values.role }}
{{- end }}

{{/*
The node binary for the role.
*/}}
{{- define "tether.binary" -}}
{{- if eq (include "tether.role" .) "core" }}core-node{{ else }}edge-node{{ end }}
{{- end }}

{{/*
The node's name: node.name, else "hq" for a core and the release name for an edge.
*/}}
{{- define "tether.nodeName" -}}
{{- if .Values.node.name }}
{{- .Values.node.name }}
{{- else if eq (include "tether.role" .) "core" }}
{{- "hq" }}
{{- else }}
{{- if not (regexMatch "^[a-z0-9][a-z0-9-]{0,62}$" .Release.Name) }}
{{- fail (printf "node.name: the release name %q is not a node name (1 to 63 of a-z, 0-9 and '-'); set node.name" .Release.Name) }}
{{- end }}
{{- .Release.Name }}
{{- end }}
{{- end }}

{{/*
The chart label.
*/}}
{{- define "tether.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The labels the pod is selected by (immutable once installed: no EZUA labels here).
*/}}
{{- define "tether.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tether.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ include "tether.role" . }}
{{- end }}

{{/*
The labels EZUA's resource and pod health monitoring expect, when ezua.enabled.
*/}}
{{- define "tether.ezuaLabels" -}}
{{- if .Values.ezua.enabled -}}
hpe-ezua/app: {{ .Release.Name }}
hpe-ezua/type: vendor-service
{{- end }}
{{- end }}

{{/*
The labels of every object.
*/}}
{{- define "tether.labels" -}}
helm.sh/chart: {{ include "tether.chart" . }}
{{ include "tether.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tether
{{- with include "tether.ezuaLabels" . }}
{{ . }}
{{- end }}
{{- end }}

{{/*
The image reference.
*/}}
{{- define "tether.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.registry }}
{{- printf "%s/%s:%s" (trimSuffix "/" .Values.image.registry) .Values.image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
The ServiceAccount's name.
*/}}
{{- define "tether.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tether.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The Secret holding the node's TLS files, checked: exactly one source.
*/}}
{{- define "tether.certsSecret" -}}
{{- $c := .Values.certificates }}
{{- $sources := 0 }}
{{- range (list $c.certManager.enabled $c.existingSecret $c.enrollment.codeSecret) }}{{ if . }}{{ $sources = add1 $sources }}{{ end }}{{ end }}
{{- if and $c.enrollment.codeSecret (gt $sources 1) }}
{{- fail "certificates: set one of certificates.existingSecret, certificates.certManager.enabled and certificates.enrollment.codeSecret" }}
{{- else if and $c.enrollment.caKeySecret (ne .Values.role "core") }}
{{- fail "certificates.enrollment.caKeySecret is for the core: HQ holds the CA's key to enroll edges; an edge never does" }}
{{- else if and $c.enrollment.codeSecret (eq .Values.role "core") }}
{{- fail "certificates.enrollment.codeSecret is for an edge: it joins HQ with a code; HQ's own files come from `core-node certs init` (certificates.existingSecret)" }}
{{- else if $c.enrollment.codeSecret }}
{{- /* Enrolled: the files live on the data volume; no Secret holds them. */ -}}
{{- else if and $c.certManager.enabled $c.existingSecret }}
{{- fail "certificates: set either certificates.existingSecret or certificates.certManager.enabled, not both" }}
{{- else if $c.certManager.enabled }}
{{- if not $c.certManager.issuerRef.name }}
{{- fail "certificates.certManager.issuerRef.name is required with certificates.certManager.enabled: the cert-manager Issuer (kind CA) of the mission CA" }}
{{- end }}
{{- printf "%s-certs" (include "tether.fullname" .) }}
{{- else if $c.existingSecret }}
{{- $c.existingSecret }}
{{- else }}
{{- fail (printf "certificates: the node needs its TLS files: set certificates.existingSecret to a Secret with ca.pem, %s.pem and %s.key (from `core-node certs`), enable certificates.certManager, or (an edge) set certificates.enrollment.codeSecret to a Secret holding an enrollment code from HQ" (include "tether.nodeName" .) (include "tether.nodeName" .)) }}
{{- end }}
{{- end }}

{{/*
The Secret keys of the CA certificate, the node's certificate and its key, as a dict
{ca, cert, key}.
*/}}
{{- define "tether.certsKeys" -}}
{{- $name := include "tether.nodeName" . }}
{{- if .Values.certificates.certManager.enabled }}
{{- dict "ca" "ca.crt" "cert" "tls.crt" "key" "tls.key" | toJson }}
{{- else }}
{{- $k := .Values.certificates.keys }}
{{- dict "ca" (default "ca.pem" $k.ca) "cert" (default (printf "%s.pem" $name) $k.cert) "key" (default (printf "%s.key" $name) $k.key) | toJson }}
{{- end }}
{{- end }}

{{/*
The edge's core address, checked.
*/}}
{{- define "tether.linkCore" -}}
{{- if not .Values.link.core }}
{{- fail "link.core is required for an edge: the core's QUIC address host:port (the core release's link.advertisedAddress), e.g. --set link.core=hq.example.org:30700" }}
{{- end }}
{{- .Values.link.core }}
{{- end }}

{{/*
The link's idle timeout, checked against its keep-alive (the schema checks each alone):
at least two keep-alives, or a healthy idle link would time out between two of them.
*/}}
{{- define "tether.linkIdleTimeout" -}}
{{- $keepAlive := include "tether.seconds" .Values.link.keepAlive | int }}
{{- $idleTimeout := include "tether.seconds" .Values.link.idleTimeout | int }}
{{- if lt $idleTimeout (mul 2 $keepAlive) }}
{{- fail (printf "link.idleTimeout %s is less than twice link.keepAlive %s: a healthy idle link would time out between two keep-alives; set link.idleTimeout to at least %ds or link.keepAlive to at most %ds" .Values.link.idleTimeout .Values.link.keepAlive (mul 2 $keepAlive) (div $idleTimeout 2)) }}
{{- end }}
{{- .Values.link.idleTimeout }}
{{- end }}

{{/*
A duration in whole seconds, from "90s", "5m" or "1h" (the units of the link's values).
*/}}
{{- define "tether.seconds" -}}
{{- $n := regexFind "^[0-9]+" . | int }}
{{- $unit := trimPrefix (regexFind "^[0-9]+" .) . }}
{{- if eq $unit "h" }}
{{- mul $n 3600 }}
{{- else if eq $unit "m" }}
{{- mul $n 60 }}
{{- else if eq $unit "s" }}
{{- $n }}
{{- else }}
{{- fail (printf "%q: expected a whole number of s, m or h" .) }}
{{- end }}
{{- end }}

{{/*
A value for the TOML file: a size or duration as written (an integer stays one, text
becomes a TOML string; JSON strings are TOML basic strings).
*/}}
{{- define "tether.toml" -}}
{{- if kindIs "string" . }}{{ include "tether.str" . }}{{ else }}{{ int64 . }}{{ end }}
{{- end }}

{{/*
A TOML string: JSON's quoting, without the escapes of &, < and > that TOML does not need.
*/}}
{{- define "tether.str" -}}
{{- toJson . | replace "\\u0026" "&" | replace "\\u003c" "<" | replace "\\u003e" ">" }}
{{- end }}

{{/*
Where the node's tokens come from, checked, as a dict: {} for a node without a token
(http.insecureNoToken), else {name, key, readKey, generated}: the Secret, the keys of the
token and of the read token ("" : none), and whether the chart makes that Secret.
*/}}
{{- define "tether.tokenSecret" -}}
{{- $t := .Values.http.tokenSecret }}
{{- if .Values.http.insecureNoToken }}
{{- if $t.name }}
{{- fail (printf "http: set either http.tokenSecret.name (%s) or http.insecureNoToken, not both: a node with a token is not a node without one" $t.name) }}
{{- end }}
{{- dict | toJson }}
{{- else if $t.name }}
{{- if eq $t.key $t.readKey }}
{{- fail (printf "http.tokenSecret.readKey %q is http.tokenSecret.key too: the read token must differ from the token; name another key of Secret %s, or \"\" for no read token" $t.readKey $t.name) }}
{{- end }}
{{- dict "name" $t.name "key" $t.key "readKey" $t.readKey "generated" false | toJson }}
{{- else if $t.generate }}
{{- dict "name" (printf "%s-http-token" (include "tether.fullname" .)) "key" "token" "readKey" "read-token" "generated" true | toJson }}
{{- else }}
{{- fail "http: the node serves HTTP beyond its pod, so it needs a token, and these values give it none: leave http.tokenSecret.generate on (the chart makes a Secret with random tokens), or name your own Secret in http.tokenSecret.name (and .key, .readKey), or, for a lab only, set http.insecureNoToken=true (anyone who reaches the port reads and changes everything)" }}
{{- end }}
{{- end }}

{{/*
The data of the token Secret the chart makes: the tokens already in the cluster's Secret
of that name (an upgrade keeps them), else new random ones (an install, or a render
without a cluster; key by key, so that a Secret missing one gets it). The chart's only
lookup: helm/tests/test_chart.py answers it from a made-up cluster to check all this.
*/}}
{{- define "tether.tokenSecretData" -}}
{{- $secret := include "tether.tokenSecret" . | fromJson }}
{{- $found := lookup "v1" "Secret" .Release.Namespace $secret.name }}
{{- $data := dict }}
{{- if and $found $found.data }}
{{- $data = $found.data }}
{{- end }}
{{- $token := get $data "token" | default (randAlphaNum 32 | b64enc) }}
{{- $readToken := get $data "read-token" | default (randAlphaNum 32 | b64enc) }}
{{- dict "token" $token "read-token" $readToken | toJson }}
{{- end }}

{{/*
How many cores this release runs (`cores`), checked: more than one only for a core on a
backbone, with certificates from a Secret named per core.
*/}}
{{- define "tether.cores" -}}
{{- $n := int (default 1 .Values.cores) }}
{{- if gt $n 1 }}
{{- if ne (include "tether.role" .) "core" }}
{{- fail "cores: an edge is one node; cores > 1 runs several cores of one HQ" }}
{{- else if not (and .Values.bridge.backbone .Values.bridge.urls) }}
{{- fail (printf "cores: %d cores of one HQ share their entries through NATS: set bridge.urls and bridge.backbone=true" $n) }}
{{- else if .Values.certificates.certManager.enabled }}
{{- fail "cores: with several cores, certificates come from certificates.existingSecret (one <node name>-<ordinal>.pem and .key per core); cert-manager issues one certificate" }}
{{- else if or .Values.certificates.keys.cert .Values.certificates.keys.key }}
{{- fail "cores: with several cores, each core's files are <node name>-<ordinal>.pem and .key in the Secret: leave certificates.keys.cert and .key empty" }}
{{- end }}
{{- end }}
{{- $n }}
{{- end }}

{{/*
The projected sources of the NATS files (/etc/tether/nats): an NKey seed or credentials
file, the servers' CA and this node's client certificate; empty when there are none.
*/}}
{{- define "tether.natsFiles" -}}
{{- with .Values.bridge }}
{{- if .urls }}
{{- $c := .credentialsSecret }}
{{- if and $c.name (or $c.nkeySeedKey $c.credsKey) }}
- secret:
    name: {{ $c.name }}
    items:
      {{- if $c.nkeySeedKey }}
      - key: {{ $c.nkeySeedKey }}
        path: nkey.seed
      {{- end }}
      {{- if $c.credsKey }}
      - key: {{ $c.credsKey }}
        path: nats.creds
      {{- end }}
{{- end }}
{{- with .tlsSecret }}
{{- if .name }}
- secret:
    name: {{ .name }}
    items:
      - key: {{ .caKey }}
        path: ca.pem
      {{- if .certKey }}
      - key: {{ .certKey }}
        path: client.pem
      - key: {{ .keyKey }}
        path: client.key
      {{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
