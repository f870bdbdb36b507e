{{/*
The node's TOML config file, from the values: the file a person would write by hand,
with the keys the pod needs fixed by the chart.
*/}}
{{- define "tether.config" -}}
{{- $role := include "tether.role" . }}
{{- $name := include "tether.nodeName" . -}}
# Tether node configuration, rendered by the Helm chart from its values ({{ $role }}).
# The same file `{{ include "tether.binary" . }} --print-config` prints; every key may be
# overridden by an environment variable TETHER_<SECTION>__<KEY>.

[node]
# The node's name: the origin of its entries everywhere; its certificate names it.
name = {{ include "tether.str" $name }}
# Where the node keeps its data: the pod's data volume.
data_dir = "/var/lib/tether"

[log]
# "text" for people, "json" for log collectors.
format = {{ include "tether.str" .Values.log.format }}
# What to log, as a tracing filter directive. RUST_LOG overrides it.
filter = {{ include "tether.str" .Values.log.filter }}

[store]
# Largest entry a producer or a peer may append; larger ones are refused.
max_entry_bytes = {{ include "tether.toml" .Values.store.maxEntryBytes }}
# Total entry bytes the node may hold; past it retention removes the oldest entries.
# Left out: a third of the volume's room for the store when the node starts; 0: none.
{{- if or .Values.store.diskBudget (eq (toString .Values.store.diskBudget) "0") }}
disk_budget = {{ include "tether.toml" .Values.store.diskBudget }}
{{- else }}
# disk_budget = "10GiB"
{{- end }}
# Free space the store leaves on its volume: under it, appends are refused.
min_free = {{ include "tether.toml" .Values.store.minFree }}
# sled's page cache.
cache_bytes = {{ include "tether.toml" .Values.store.cacheBytes }}
# How often retention runs.
retention_interval = {{ include "tether.str" .Values.store.retentionInterval }}

[link]
{{- if eq $role "core" }}
# The UDP address this core listens on for its edges' QUIC connections.
listen = {{ include "tether.str" (printf "0.0.0.0:%d" (int .Values.link.port)) }}
# The edges that may connect, by node name.
edges = [{{ range $i, $edge := .Values.link.edges }}{{ if $i }}, {{ end }}{{ include "tether.str" $edge }}{{ end }}]
# Accept any edge the mission CA issued a certificate to, listed or not.
allow_any_edge = {{ .Values.link.allowAnyEdge }}
# What this core relays from one edge to the others, per second (0: no limit).
relay_rate = {{ include "tether.toml" .Values.link.relayRate }}
relay_entries = {{ int64 .Values.link.relayEntries }}
relay_burst = {{ include "tether.str" .Values.link.relayBurst }}
# How long, and how many bytes, this core keeps entries for an edge that is away.
allowance_age = {{ include "tether.str" .Values.link.allowanceAge }}
allowance_bytes = {{ include "tether.toml" .Values.link.allowanceBytes }}
{{- else }}
# The core's address, host:port (UDP), resolved again at each dial.
core = {{ include "tether.str" (include "tether.linkCore" .) }}
# The core's node name: the certificate the core presents must name it.
core_name = {{ include "tether.str" .Values.link.coreName }}
# The HQ's other cores, dialed in turn when the one in use stops answering.
failover = [{{ range $i, $c := .Values.link.failover }}{{ if $i }}, {{ end }}{{ include "tether.str" $c }}{{ end }}]
{{- end }}
# This node's certificate and key ({{ $name }}.pem, {{ $name }}.key) and the mission CA's
# certificate (ca.pem).
{{- if .Values.certificates.enrollment.codeSecret }}
# Enrolled with a code at the first start (the init container), kept on the data volume
# and renewed there over the link.
certs_dir = "/var/lib/tether/certs"
{{- else }}
# The mounted Secret.
certs_dir = "/etc/tether/certs"
{{- end }}
# The files come from the Secret: never create any.
demo_certs = false
# How often this node pings a quiet link, to keep NAT and conntrack state alive.
keep_alive = {{ include "tether.str" .Values.link.keepAlive }}
# A link with no packet from the peer for this long is dead: it is closed and the edge
# redials. The smaller of both sides' values applies.
idle_timeout = {{ include "tether.str" (include "tether.linkIdleTimeout" .) }}

[mirror]
{{- if eq $role "core" }}
# The mission volume served to the edges' mirrors: <data_dir>/volume.
# volume = "/var/lib/tether/volume"
{{- else }}
# Where the mirror of the core's volume is kept: <data_dir>/mirror.
# dir = "/var/lib/tether/mirror"
{{- end }}
# Cap on mirror bytes per second (the lower of the core's and the edge's applies).
{{- if .Values.mirror.maxRate }}
max_rate = {{ include "tether.toml" .Values.mirror.maxRate }}
{{- else }}
# max_rate = "64KiB"
{{- end }}

[http]
# Where the node serves its HTTP API, page and files: every interface of the pod.
listen = {{ include "tether.str" (printf "0.0.0.0:%d" (int .Values.http.port)) }}
{{- $svc := printf "%s-http" (include "tether.fullname" .) }}
{{- $hosts := list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) }}
{{- if and .Values.ingress.enabled .Values.ingress.host (not (contains "*" .Values.ingress.host)) }}
{{- $hosts = append $hosts .Values.ingress.host }}
{{- end }}
{{- if and .Values.ezua.enabled .Values.ezua.virtualService.endpoint (not (contains "$" .Values.ezua.virtualService.endpoint)) }}
{{- $hosts = append $hosts .Values.ezua.virtualService.endpoint }}
{{- end }}
{{- range .Values.http.hosts }}
{{- $hosts = append $hosts . }}
{{- end }}
# The names this node answers to besides IP addresses and localhost: its HTTP Service,
# the Ingress or EZUA host, and http.hosts (EZUA substitutes ${...} in its endpoint
# before it renders; an endpoint not yet substituted is left out).
hosts = [{{ range $i, $h := $hosts }}{{ if $i }}, {{ end }}{{ include "tether.str" (lower $h) }}{{ end }}]
{{- $token := include "tether.tokenSecret" . | fromJson }}
{{- if $token.name }}
# The token every request but /healthz and /readyz must carry (token), and the one that
# only reads (read_token): never in this file; from Secret {{ $token.name }} as
# TETHER_HTTP__TOKEN (key {{ $token.key }}){{ if $token.readKey }} and TETHER_HTTP__READ_TOKEN (key {{ $token.readKey }}){{ else }}, no read token{{ end }}.
insecure_no_token = false
{{- else }}
# WARNING: no token (the chart's http.insecureNoToken): anyone who reaches this port
# reads and changes everything. For a lab only.
insecure_no_token = true
{{- end }}
{{- with .Values.bridge }}
{{- if and .credentialsSecret.passwordKey (not .user) }}
{{- fail "bridge.credentialsSecret.passwordKey needs bridge.user: NATS checks a password with its user" }}
{{- end }}
{{- if .urls }}

[bridge]
# The NATS servers (JetStream) this node bridges its topics with.
urls = [{{ range $i, $u := .urls }}{{ if $i }}, {{ end }}{{ include "tether.str" $u }}{{ end }}]
# Topics into the stream, as <subject_prefix>.<topic>.<origin>.
out = [{{ range $i, $t := .out }}{{ if $i }}, {{ end }}{{ include "tether.str" $t }}{{ end }}]
stream = {{ include "tether.str" .stream }}
subject_prefix = {{ include "tether.str" .subjectPrefix }}
# Topics from the stream in_stream, on <in_prefix>.<topic>[.<edge>].
in = [{{ range $i, $t := .in }}{{ if $i }}, {{ end }}{{ include "tether.str" $t }}{{ end }}]
in_stream = {{ include "tether.str" .inStream }}
in_prefix = {{ include "tether.str" .inPrefix }}
create_streams = {{ .createStreams }}
replicas = {{ int64 .replicas }}
duplicate_window = {{ include "tether.str" .duplicateWindow }}
{{- if .user }}
user = {{ include "tether.str" .user }}
{{- end }}
{{- with .credentialsSecret }}
{{- $kinds := 0 }}
{{- range (list .passwordKey .tokenKey .nkeySeedKey .credsKey) }}{{ if . }}{{ $kinds = add1 $kinds }}{{ end }}{{ end }}
{{- if gt $kinds 1 }}
{{- fail "bridge.credentialsSecret: set one kind of NATS credentials: passwordKey (with bridge.user), tokenKey, nkeySeedKey or credsKey" }}
{{- end }}
{{- if and .name (or .passwordKey .tokenKey) }}
# The password or token: never in this file; from Secret {{ .name }} in the environment.
{{- end }}
{{- if and .name .nkeySeedKey }}
# An NKey seed, from Secret {{ .name }}.
nkey_seed_file = "/etc/tether/nats/nkey.seed"
{{- end }}
{{- if and .name .credsKey }}
# A NATS credentials file (JWT and seed), from Secret {{ .name }}.
creds_file = "/etc/tether/nats/nats.creds"
{{- end }}
{{- end }}
{{- with .tlsSecret }}
{{- if .name }}
{{- if ne (empty .certKey) (empty .keyKey) }}
{{- fail "bridge.tlsSecret: certKey and keyKey go together (this node's client certificate and its key)" }}
{{- end }}
# TLS to NATS, from Secret {{ .name }}: the servers' CA{{ if .certKey }}, this node's certificate and key{{ end }}.
tls_ca_file = "/etc/tether/nats/ca.pem"
{{- if .certKey }}
tls_cert_file = "/etc/tether/nats/client.pem"
tls_key_file = "/etc/tether/nats/client.key"
{{- end }}
{{- end }}
{{- end }}
{{- if .backbone }}
# The HQ's cores share their entries and fleet decisions through these streams, and a
# core acknowledges an edge's entries only once JetStream holds them.
backbone = true
backbone_stream = {{ include "tether.str" .backboneStream }}
backbone_prefix = {{ include "tether.str" .backbonePrefix }}
{{- end }}
{{- end }}
{{- end }}

[pipeline]
{{- if eq $role "core" }}
# The IMAGE feed document: a path or an http(s) URL. Left out: the built-in demo feed.
{{- if .Values.pipeline.feed }}
feed = {{ include "tether.str" .Values.pipeline.feed }}
{{- else }}
# feed = "https://images-api.nasa.gov/search?q=apollo&media_type=image"
{{- end }}
# How often the feed service picks new items, and how many each time.
feed_every = {{ include "tether.str" .Values.pipeline.feedEvery }}
feed_batch = {{ int .Values.pipeline.feedBatch }}
# Limits on one image download.
max_download_bytes = {{ include "tether.toml" .Values.pipeline.maxDownloadBytes }}
download_timeout = {{ include "tether.str" .Values.pipeline.downloadTimeout }}
# Internal addresses or ranges the downloader may fetch from (it refuses loopback,
# private, link-local and multicast addresses otherwise).
download_allow = [{{ range $i, $a := .Values.pipeline.downloadAllow }}{{ if $i }}, {{ end }}{{ include "tether.str" $a }}{{ end }}]
{{- end }}
# Start every service the first time the node starts.
start_services = {{ .Values.pipeline.startServices }}
{{- with .Values.topics }}

# The topics this node holds (they replace the default list).
{{- range . }}

[[topics]]
name = {{ include "tether.str" .name }}
scope = {{ include "tether.str" .scope }}
{{- if .maxAge }}
max_age = {{ include "tether.str" .maxAge }}
{{- end }}
{{- if .maxBytes }}
max_bytes = {{ include "tether.toml" .maxBytes }}
{{- end }}
{{- if .maxEntries }}
max_entries = {{ int64 .maxEntries }}
{{- end }}
{{- if kindIs "string" .writers }}
writers = {{ include "tether.str" .writers }}
{{- else if .writers }}
writers = [{{ range $i, $w := .writers }}{{ if $i }}, {{ end }}{{ include "tether.str" $w }}{{ end }}]
{{- end }}
{{- end }}
{{- end }}
{{- end }}
