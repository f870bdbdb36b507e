#!/usr/bin/env python3
"""Offline tests of the Tether Helm chart (helm/tether), without a cluster or `helm`.

    .venv/bin/python helm/tests/test_chart.py <out_dir>

Uses Helm's own Go SDK (helm-python-sdk: lint, render, the values schema) and the
Kubernetes schemas of kubernetes-validate. For each preset (values-core.yaml,
values-edge.yaml, values-ezua.yaml) and for two scenarios with every option on, it:

- lints the chart, strict;
- renders it and validates every object strictly against the oldest Kubernetes the chart
  supports and the newest bundled; the kinds without a bundled schema (VirtualService,
  AuthorizationPolicy, ServiceMonitor, Certificate) are checked field by field here;
- checks what the node needs: one replica, the data volume at data_dir, the config file
  where --config points, the certificates where certs_dir points with the file names the
  node reads, probes on /healthz and /readyz, limits, a locked-down security context, a
  grace period longer than the node's drain, the QUIC Service at the core only;
- writes the node's rendered config to <out_dir>/<preset>.toml (the Rust test
  tests/it/chart.rs starts the real binaries with them) and prints the object list.

Then it checks that bad values are refused with a message that says what is wrong, and
that the Dockerfile builds what the chart runs.
Prints one line per failure and a closing "N passed, N failed"; exits 1 on a failure.
"""

import copy
import pathlib
import re
import sys
import tomllib

import helm_python as helm
import kubernetes_validate
import yaml

CHART = pathlib.Path(__file__).resolve().parents[1] / "tether"
NAMESPACE = "tether"
# The chart's kubeVersion floor and the newest Kubernetes kubernetes-validate bundles.
KUBE_VERSIONS = ("1.26.0", "1.37.0")
# The kinds without a schema in kubernetes-validate: checked here, field by field.
CUSTOM_KINDS = {
    "VirtualService": "networking.istio.io/v1beta1",
    "AuthorizationPolicy": "security.istio.io/v1beta1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "Certificate": "cert-manager.io/v1",
}
# What a node may take to stop after SIGTERM: its links' close grace (CLOSE_GRACE in
# protocol/src/node.rs, 2 s) plus stopping its services and flushing its store.
DRAIN_SECONDS = 10
# The files the node reads from certs_dir (protocol/src/tls/ca.rs).
CA_CERT_FILE = "ca.pem"

# name: (values file, release name)
PRESETS = {
    "core": ("values-core.yaml", "hq"),
    "edge": ("values-edge.yaml", "alpha"),
    "ezua": ("values-ezua.yaml", "tether"),
}


def deep_merge(base, extra):
    """base with extra's keys merged in, recursively (extra wins)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def preset(name):
    return yaml.safe_load((CHART / PRESETS[name][0]).read_text())


# Every option on: cert-manager, Ingress with TLS, ServiceMonitor, the token Secret, extra env, topics, budgets, a NodePort with a fixed port, peers in the
# NetworkPolicy.
FULL_CORE = {
    "role": "core",
    "node": {"name": "hq"},
    "log": {"format": "text", "filter": "protocol=debug,info"},
    "store": {"diskBudget": "8GiB", "maxEntryBytes": 2097152},
    "link": {
        "edges": ["alpha", "bravo"],
        "allowAnyEdge": True,
        "keepAlive": "20s",
        "idleTimeout": "2m",
        "advertisedAddress": "203.0.113.7:30700",
        "service": {
            "type": "NodePort",
            "nodePort": 30700,
            "externalTrafficPolicy": "Local",
            "annotations": {"example.org/udp": "yes"},
        },
    },
    "mirror": {"maxRate": "64KiB"},
    "http": {"tokenSecret": {"name": "tether-api", "key": "token"}},
    "pipeline": {
        "feed": "https://images-api.nasa.gov/search?q=apollo&media_type=image",
        "feedBatch": 3,
    },
    "topics": [
        {"name": "ASSET_BROADCAST", "scope": "all", "maxAge": "30d", "writers": "core"},
        {"name": "ASSET_REQUEST", "scope": "core", "maxAge": "30d"},
        {"name": "ASSET_RESPONSE", "scope": "all", "maxBytes": "1GiB", "maxEntries": 100000, "writers": "core"},
        {"name": "SENSORS", "scope": "all", "writers": ["alpha", "bravo"]},
        {"name": "IMAGE_FEED", "scope": "local", "maxAge": "7d"},
        {"name": "IMAGE_DOWNLOAD", "scope": "local", "maxAge": "7d"},
    ],
    "certificates": {
        "certManager": {"enabled": True, "issuerRef": {"name": "mission-ca", "kind": "ClusterIssuer"}},
    },
    "persistence": {"storageClassName": "fast", "annotations": {"example.org/backup": "daily"}},
    "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
    "podAnnotations": {"example.org/team": "hq"},
    "podLabels": {"example.org/site": "hq"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "tether", "effect": "NoSchedule"}],
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "host": "tether.example.org",
        "tlsSecret": "tether-tls",
        "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"},
    },
    "podDisruptionBudget": {"enabled": True, "maxUnavailable": 0},
    "networkPolicy": {
        "enabled": True,
        "http": {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]},
        "link": {"from": [{"ipBlock": {"cidr": "198.51.100.0/24"}}]},
    },
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "ezua": {
        "enabled": True,
        "virtualService": {"endpoint": "tether.ezua.example.org"},
        "authorizationPolicy": {"excludePaths": ["/api/*", "/metrics"]},
    },
    "serviceAccount": {"create": False, "name": "tether"},
    "imagePullSecrets": [{"name": "regcred"}],
    "image": {"registry": "registry.example.org:5000/", "tag": "1.2.3"},
}
FULL_EDGE = {
    "role": "edge",
    "link": {"core": "[2001:db8::7]:30700", "coreName": "hq"},
    "certificates": {"certManager": {"enabled": True, "issuerRef": {"name": "mission-ca"}}},
    "ingress": {"enabled": True},
    "podDisruptionBudget": {"enabled": True},
    "networkPolicy": {"enabled": True},
    "metrics": {"serviceMonitor": {"enabled": True}},
}
SCENARIOS = {
    "core-full": (FULL_CORE, "hq"),
    # No node.name: an edge is named after its release.
    "edge-full": (FULL_EDGE, "bravo"),
}


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = []

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed.append(what)
            print(f"FAIL {what}", flush=True)
        return ok


R = Results()


def render(values, release):
    chart = helm.Chart.load(str(CHART))
    return chart.render(values, name=release, namespace=NAMESPACE, is_install=True)


def objects_of(rendered):
    """The rendered objects, in template order, and the NOTES text."""
    objects, notes = [], ""
    for path in sorted(rendered):
        text = rendered[path]
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects, notes


def lint(name, values):
    for version in KUBE_VERSIONS:
        report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version=f"v{version}")
        # Severity 2 is a warning, 3 an error; "icon is recommended" is information (1).
        bad = [f"{m['path']}: {m['error'].strip()}" for m in report["messages"] if m["severity"] >= 2]
        R.check(not bad and not report["errors"], f"{name}: lint (strict, {version}): {bad} {report['errors']}")


def validate(name, obj):
    kind = obj.get("kind")
    label = f"{name}: {kind}/{obj.get('metadata', {}).get('name')}"
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
            R.check(True, label)
        except kubernetes_validate.SchemaNotFoundError:
            R.check(kind in CUSTOM_KINDS, f"{label}: no Kubernetes {version} schema, and not a kind checked here")
            return
        except kubernetes_validate.ValidationError as e:
            R.check(False, f"{label}: invalid for Kubernetes {version}: {e.message} at {list(e.path)}")


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def one(objects, kind, name):
    found = by_kind(objects, kind)
    R.check(len(found) == 1, f"{name}: exactly one {kind}, found {len(found)}")
    return found[0] if found else None


def get(obj, *path, default=None):
    for key in path:
        if isinstance(obj, dict) and key in obj:
            obj = obj[key]
        elif isinstance(obj, list) and isinstance(key, int) and key < len(obj):
            obj = obj[key]
        else:
            return default
    return obj


def check_workload(name, values, objects, notes, release):
    """What the node needs from its pod, and what the chart promises about it."""
    role = values["role"]
    node_name = get(values, "node", "name") or ("hq" if role == "core" else release)
    sts = one(objects, "StatefulSet", name)
    cm = one(objects, "ConfigMap", name)
    if not sts or not cm:
        return None
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    R.check(spec["replicas"] == 1, f"{name}: the StatefulSet runs one replica (the store is single-writer)")
    containers = pod["containers"]
    R.check(len(containers) == 1, f"{name}: one container")
    c = containers[0]
    binary = "core-node" if role == "core" else "edge-node"
    R.check(c["name"] == binary, f"{name}: the container runs {binary}, not {c['name']}")

    # The image holds both binaries and has no entrypoint: the command picks the role's.
    R.check(c.get("command") == [f"/usr/local/bin/{binary}"], f"{name}: the command is {binary}: {c.get('command')}")
    # The config file: --config points at the ConfigMap's key.
    args = c.get("args", [])
    R.check(args[:1] == ["--config"] and len(args) == 2, f"{name}: args are --config <path>: {args}")
    config_path = pathlib.PurePosixPath(args[1]) if len(args) == 2 else None
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_mount = mounts.get(str(config_path.parent)) if config_path else None
    R.check(
        config_mount is not None
        and get(volumes, config_mount["name"], "configMap", "name") == cm["metadata"]["name"]
        and config_path.name in cm["data"],
        f"{name}: --config {config_path} is the ConfigMap's {list(cm['data'])}",
    )
    text = cm["data"].get(config_path.name, "") if config_path else ""
    R.check(
        f"-- {binary} status --config {config_path}" in notes,
        f"{name}: NOTES shows the CLI in the pod with the config file {config_path}",
    )
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        R.check(False, f"{name}: the rendered config is not TOML: {e}\n{text}")
        return None

    # The keys the chart fixes for the pod.
    R.check(config["node"]["name"] == node_name, f"{name}: node.name {config['node']['name']!r} != {node_name!r}")
    data_dir = config["node"]["data_dir"]
    data_mount = mounts.get(data_dir)
    claims = [t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])]
    R.check(
        data_mount is not None and data_mount["name"] in claims and not data_mount.get("readOnly"),
        f"{name}: data_dir {data_dir} is the claim's writable mount (claims {claims})",
    )
    ports = {p["name"]: p for p in c["ports"]}
    http_port = ports.get("http", {}).get("containerPort")
    R.check(
        config["http"]["listen"] == f"0.0.0.0:{http_port}" and ports["http"]["protocol"] == "TCP",
        f"{name}: http.listen {config['http']['listen']} is every interface on the http port {http_port}",
    )
    # The names the node answers to (DNS rebinding): its HTTP Service's, and the Ingress
    # or EZUA host when there is one (an EZUA endpoint still holding ${...} is left out).
    hosts = config["http"].get("hosts", [])
    svc = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"].endswith("-http"))
    R.check(svc["metadata"]["name"] in hosts, f"{name}: http.hosts {hosts} names the HTTP Service")
    for host in (get(values, "ingress", "host") if get(values, "ingress", "enabled") else None,
                 get(values, "ezua", "virtualService", "endpoint") if get(values, "ezua", "enabled") else None):
        if host and "$" not in host and "*" not in host:
            R.check(host.lower() in hosts, f"{name}: http.hosts {hosts} names {host}")
    link = config["link"]
    R.check(link["demo_certs"] is False, f"{name}: demo_certs is false")
    link_defaults = yaml.safe_load((CHART / "values.yaml").read_text())["link"]
    for key, value in (("keep_alive", "keepAlive"), ("idle_timeout", "idleTimeout")):
        want = get(values, "link", value) or link_defaults[value]
        R.check(link.get(key) == want, f"{name}: link.{key} {link.get(key)!r} is link.{value} {want!r}")
    certs_mount = mounts.get(link["certs_dir"])
    certs_volume = volumes.get(certs_mount["name"]) if certs_mount else None
    R.check(
        certs_volume is not None and "secret" in certs_volume and certs_mount.get("readOnly"),
        f"{name}: certs_dir {link['certs_dir']} is a read-only Secret mount",
    )
    if certs_volume and "secret" in certs_volume:
        paths = sorted(i["path"] for i in certs_volume["secret"].get("items", []))
        wanted = sorted([CA_CERT_FILE, f"{node_name}.pem", f"{node_name}.key"])
        R.check(paths == wanted, f"{name}: the certificates are mounted as {wanted}, not {paths}")
        mode = certs_volume["secret"].get("defaultMode", 0o644)
        R.check(mode & 0o007 == 0, f"{name}: the key is not readable by others (mode {mode:o})")
    if role == "core":
        quic = ports.get("quic", {})
        R.check(
            link.get("listen") == f"0.0.0.0:{quic.get('containerPort')}" and quic.get("protocol") == "UDP",
            f"{name}: link.listen {link.get('listen')} is every interface on the UDP quic port",
        )
        R.check("core" not in link and "core_name" not in link, f"{name}: a core's config has no edge keys")
    else:
        R.check("quic" not in ports, f"{name}: an edge exposes no QUIC port")
        R.check(
            link.get("core") == values["link"]["core"] and "listen" not in link and "edges" not in link,
            f"{name}: an edge's link has core = {values['link']['core']!r} and no core keys: {link}",
        )

    # The API's token from its Secret, as the variable that overrides [http] token.
    token = get(values, "http", "tokenSecret", "name")
    env = {e["name"]: e for e in c.get("env", [])}
    if token:
        ref = get(env, "TETHER_HTTP__TOKEN", "valueFrom", "secretKeyRef")
        want = {"name": token, "key": get(values, "http", "tokenSecret", "key") or "token"}
        R.check(ref == want, f"{name}: TETHER_HTTP__TOKEN from Secret {want}: {ref}")
    else:
        R.check("TETHER_HTTP__TOKEN" not in env, f"{name}: no token variable without http.tokenSecret")

    # Probes, resources, security, the drain.
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        got = get(c, probe, "httpGet")
        R.check(got == {"path": path, "port": "http"}, f"{name}: {probe} asks {path} on the http port: {got}")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    R.check(grace > DRAIN_SECONDS, f"{name}: terminationGracePeriodSeconds {grace} > the drain ({DRAIN_SECONDS} s)")
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    R.check(psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) > 0, f"{name}: the pod runs as non-root")
    R.check(csc.get("readOnlyRootFilesystem") is True, f"{name}: read-only root file system")
    R.check(csc.get("allowPrivilegeEscalation") is False, f"{name}: no privilege escalation")
    R.check(get(csc, "capabilities", "drop") == ["ALL"], f"{name}: every capability dropped")
    R.check(pod.get("automountServiceAccountToken") is False, f"{name}: no service account token")
    writable = [m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")]
    R.check(sorted(writable) == sorted([data_dir, "/tmp"]), f"{name}: writable only {data_dir} and /tmp: {writable}")
    # The pod restarts when its config changes.
    R.check("checksum/config" in spec["template"]["metadata"].get("annotations", {}), f"{name}: config checksum")

    # Services: they select the pod; the core has a UDP one, an edge none.
    pod_labels = spec["template"]["metadata"]["labels"]
    services = by_kind(objects, "Service")
    for svc in services:
        selector = svc["spec"]["selector"]
        R.check(
            selector.items() <= pod_labels.items(),
            f"{name}: Service {svc['metadata']['name']} selects the pod",
        )
    udp = [s for s in services if any(p.get("protocol") == "UDP" for p in s["spec"]["ports"])]
    if role == "core":
        svc_type = get(values, "link", "service", "type") or "ClusterIP"
        R.check(len(udp) == 1, f"{name}: one UDP Service for QUIC at the core")
        if udp:
            port = udp[0]["spec"]["ports"][0]
            R.check(
                udp[0]["spec"]["type"] == svc_type and port["targetPort"] == "quic",
                f"{name}: the QUIC Service is a {svc_type} to the quic port",
            )
            node_port = get(values, "link", "service", "nodePort")
            if node_port:
                R.check(port.get("nodePort") == node_port, f"{name}: the QUIC Service's nodePort is {node_port}")
        warned = "WARNING: a ClusterIP Service is reachable from inside this cluster only" in notes
        R.check(warned == (svc_type == "ClusterIP"), f"{name}: NOTES warns of a ClusterIP QUIC Service")
        advertised = get(values, "link", "advertisedAddress")
        if advertised:
            R.check(advertised in notes, f"{name}: NOTES shows the advertised address {advertised}")
    else:
        R.check(not udp, f"{name}: an edge has no UDP Service")
        R.check(values["link"]["core"] in notes, f"{name}: NOTES names the core's address")
    http_services = [s for s in services if s["metadata"]["name"].endswith("-http")]
    R.check(len(http_services) == 1, f"{name}: one HTTP Service")

    # EZUA's labels on the workload and its pods, never in the selector.
    if get(values, "ezua", "enabled"):
        for where, labels in (("StatefulSet", sts["metadata"]["labels"]), ("pod", pod_labels)):
            R.check(
                labels.get("hpe-ezua/app") == release and labels.get("hpe-ezua/type") == "vendor-service",
                f"{name}: the {where} carries EZUA's labels",
            )
        R.check(
            not any(k.startswith("hpe-ezua/") for k in spec["selector"]["matchLabels"]),
            f"{name}: EZUA's labels are not in the selector",
        )

    # Every container of every pod, the test hook's too, has CPU and memory limits.
    for obj in objects:
        pod_spec = obj["spec"] if obj["kind"] == "Pod" else get(obj, "spec", "template", "spec")
        for container in (pod_spec or {}).get("containers", []):
            limits = get(container, "resources", "limits", default={})
            R.check(
                "cpu" in limits and "memory" in limits,
                f"{name}: {obj['kind']}/{obj['metadata']['name']} has CPU and memory limits",
            )

    # The `helm test` hook asks /healthz through the HTTP Service, locked down too.
    tests = [o for o in by_kind(objects, "Pod") if get(o, "metadata", "annotations", "helm.sh/hook") == "test"]
    R.check(len(tests) == 1, f"{name}: one helm test hook Pod")
    if tests and http_services:
        t = tests[0]
        svc = http_services[0]
        url = f"http://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}/healthz"
        tc = t["spec"]["containers"][0]
        R.check(url in tc["command"], f"{name}: the test asks {url}: {tc['command']}")
        R.check(get(t, "spec", "securityContext", "runAsNonRoot") is True, f"{name}: the test pod runs as non-root")
        R.check(get(tc, "securityContext", "capabilities", "drop") == ["ALL"], f"{name}: the test drops capabilities")
        R.check(
            get(t, "metadata", "annotations", "sidecar.istio.io/inject") == "false",
            f"{name}: the test pod has no Istio sidecar (it would never complete)",
        )
    return text


def check_custom(name, values, objects, release):
    """The kinds without a bundled schema: their apiVersion, their known fields, and
    what they must point at."""
    role = values["role"]
    node_name = get(values, "node", "name") or ("hq" if role == "core" else release)
    http = [s for s in by_kind(objects, "Service") if s["metadata"]["name"].endswith("-http")]
    http_svc = http[0] if http else None
    sts = by_kind(objects, "StatefulSet")
    for obj in objects:
        kind = obj["kind"]
        if kind not in CUSTOM_KINDS:
            continue
        label = f"{name}: {kind}/{obj['metadata']['name']}"
        R.check(obj["apiVersion"] == CUSTOM_KINDS[kind], f"{label}: apiVersion {obj['apiVersion']}")
        R.check(
            set(obj) <= {"apiVersion", "kind", "metadata", "spec"}
            and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"] or ""),
            f"{label}: only apiVersion, kind, metadata and spec, and a DNS-label name",
        )
        spec = obj["spec"]
        if kind == "VirtualService":
            vs = values["ezua"]["virtualService"]
            gateway = vs.get("istioGateway", "istio-system/ezaf-gateway")
            R.check(set(spec) == {"gateways", "hosts", "http"}, f"{label}: spec fields {sorted(spec)}")
            R.check(spec["hosts"] == [vs["endpoint"]], f"{label}: hosts {spec['hosts']}")
            R.check(spec["gateways"] == [gateway], f"{label}: gateways {spec['gateways']}")
            dest = get(spec, "http", 0, "route", 0, "destination")
            want = f"{http_svc['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
            R.check(
                dest == {"host": want, "port": {"number": http_svc["spec"]["ports"][0]["port"]}},
                f"{label}: routes to the HTTP Service {want}: {dest}",
            )
        elif kind == "AuthorizationPolicy":
            ap = deep_merge(
                {"namespace": "istio-system", "providerName": "oauth2-proxy", "matchLabels": {"istio": "ingressgateway"}},
                values["ezua"].get("authorizationPolicy", {}),
            )
            R.check(obj["metadata"].get("namespace") == ap["namespace"], f"{label}: in namespace {ap['namespace']}")
            R.check(set(spec) == {"action", "provider", "selector", "rules"}, f"{label}: spec fields {sorted(spec)}")
            R.check(spec["action"] == "CUSTOM", f"{label}: action CUSTOM")
            R.check(spec["provider"] == {"name": ap["providerName"]}, f"{label}: provider {spec['provider']}")
            R.check(spec["selector"] == {"matchLabels": ap["matchLabels"]}, f"{label}: selector {spec['selector']}")
            op = get(spec, "rules", 0, "to", 0, "operation", default={})
            R.check(op.get("hosts") == [values["ezua"]["virtualService"]["endpoint"]], f"{label}: hosts {op}")
            R.check(op.get("notPaths") == (ap.get("excludePaths") or None), f"{label}: notPaths {op.get('notPaths')}")
        elif kind == "ServiceMonitor":
            R.check(set(spec) == {"selector", "namespaceSelector", "endpoints"}, f"{label}: spec fields {sorted(spec)}")
            selector = spec["selector"]["matchLabels"]
            matched = [
                s["metadata"]["name"]
                for s in by_kind(objects, "Service")
                if selector.items() <= s["metadata"]["labels"].items()
            ]
            R.check(http_svc and matched == [http_svc["metadata"]["name"]], f"{label}: selects only the HTTP Service: {matched}")
            R.check(spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}, f"{label}: namespaceSelector")
            ep = spec["endpoints"]
            port_names = [p["name"] for p in http_svc["spec"]["ports"]] if http_svc else []
            R.check(
                len(ep) == 1 and ep[0]["port"] in port_names and ep[0]["path"] == "/metrics",
                f"{label}: scrapes /metrics on the HTTP Service's port: {ep}",
            )
            R.check(
                all(re.fullmatch(r"[0-9]+(ms|s|m|h)", ep[0][k]) for k in ("interval", "scrapeTimeout")),
                f"{label}: interval and scrapeTimeout are Prometheus durations",
            )
        elif kind == "Certificate":
            secret = get(sts[0], "spec", "template", "spec", "volumes") if sts else []
            secret_names = [v["secret"]["secretName"] for v in secret or [] if "secret" in v]
            R.check(spec["secretName"] in secret_names, f"{label}: writes the Secret the pod mounts: {secret_names}")
            R.check(spec["dnsNames"] == [node_name], f"{label}: one DNS name, the node's: {spec['dnsNames']}")
            R.check(spec.get("commonName") == node_name, f"{label}: commonName {spec.get('commonName')}")
            R.check(
                spec["privateKey"] == {"algorithm": "ECDSA", "size": 256, "encoding": "PKCS8", "rotationPolicy": "Always"},
                f"{label}: an ECDSA P-256 key in PKCS#8 (what the node reads): {spec['privateKey']}",
            )
            usage = "server auth" if role == "core" else "client auth"
            R.check(usage in spec["usages"], f"{label}: usages {spec['usages']} include {usage}")
            issuer = spec["issuerRef"]
            R.check(
                issuer["name"] and issuer["kind"] in ("Issuer", "ClusterIssuer") and issuer["group"] == "cert-manager.io",
                f"{label}: issuerRef {issuer}",
            )
            for key in ("duration", "renewBefore"):
                R.check(re.fullmatch(r"([0-9]+h)?([0-9]+m)?([0-9]+s)?", spec[key] or "x"), f"{label}: {key}")


def check_scenario(name, values, release, out_dir=None):
    print(f"== {name} (release {release})", flush=True)
    lint(name, values)
    try:
        rendered = render(values, release)
    except helm.HelmError as e:
        R.check(False, f"{name}: render failed: {e}")
        return None
    objects, notes = objects_of(rendered)
    for obj in objects:
        validate(name, obj)
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    R.check(len(set(names)) == len(names), f"{name}: object names are unique: {names}")
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        R.check(labels.get("app.kubernetes.io/instance") == release, f"{name}: {obj['kind']} has the instance label")
    text = check_workload(name, values, objects, notes, release)
    check_custom(name, values, objects, release)
    if out_dir is not None and text is not None:
        (out_dir / f"{name}.toml").write_text(text)
    return objects


# Bad values, each refused with a message naming what is wrong: (case, values, release,
# texts the message must hold).
def bad_cases():
    core, edge = preset("core"), preset("edge")
    edge_without_core = copy.deepcopy(edge)
    del edge_without_core["link"]["core"]
    return [
        ("no role", {"certificates": {"existingSecret": "x"}}, "hq", ["at '/role': value must be one of 'core', 'edge'"]),
        ("an unknown role", deep_merge(core, {"role": "hub"}), "hq", ["at '/role': value must be one of 'core', 'edge'"]),
        ("a port as a string", deep_merge(core, {"http": {"port": "8080"}}), "hq", ["at '/http/port': got string, want integer"]),
        ("a link port as a string", deep_merge(core, {"link": {"port": "7000/udp"}}), "hq", ["at '/link/port': got string, want integer"]),
        ("a port out of range", deep_merge(core, {"link": {"port": 70000}}), "hq", ["at '/link/port': maximum"]),
        ("a nodePort out of range", deep_merge(core, {"link": {"service": {"type": "NodePort", "nodePort": 7000}}}), "hq", ["at '/link/service/nodePort': minimum"]),
        ("an unknown Service type", deep_merge(core, {"link": {"service": {"type": "External"}}}), "hq", ["at '/link/service/type': value must be one of 'ClusterIP', 'NodePort', 'LoadBalancer'"]),
        ("an edge without the core's address", edge_without_core, "alpha", ["at '/link': missing property 'core'"]),
        ("an edge with an empty core address", deep_merge(edge, {"link": {"core": ""}}), "alpha", ["at '/link/core': minLength"]),
        ("an edge's core address without a port", deep_merge(edge, {"link": {"core": "hq.example.org"}}), "alpha", ["at '/link/core': 'hq.example.org' does not match pattern"]),
        ("a bad node name", deep_merge(core, {"node": {"name": "HQ_1"}}), "hq", ["at '/node/name': 'HQ_1' does not match pattern"]),
        ("a bad edge name", deep_merge(core, {"link": {"edges": ["alpha", "Bravo"]}}), "hq", ["at '/link/edges/1': 'Bravo' does not match pattern"]),
        ("a misspelt key", deep_merge(core, {"persistance": {"size": "1Gi"}}), "hq", ["additional properties 'persistance' not allowed"]),
        ("an unknown log format", deep_merge(core, {"log": {"format": "xml"}}), "hq", ["at '/log/format': value must be one of 'text', 'json'"]),
        ("a duration without a unit", deep_merge(core, {"store": {"retentionInterval": "10"}}), "hq", ["at '/store/retentionInterval': '10' does not match pattern"]),
        ("a keep-alive under a second", deep_merge(core, {"link": {"keepAlive": "0s"}}), "hq", ["at '/link/keepAlive': '0s' does not match pattern"]),
        ("an idle timeout over an hour", deep_merge(edge, {"link": {"idleTimeout": "2h"}}), "alpha", ["at '/link/idleTimeout': '2h' does not match pattern"]),
        ("an idle timeout under two keep-alives", deep_merge(edge, {"link": {"keepAlive": "1m", "idleTimeout": "90s"}}), "alpha", ["link.idleTimeout 90s is less than twice link.keepAlive 1m", "a healthy idle link would time out between two keep-alives", "set link.idleTimeout to at least 120s or link.keepAlive to at most 45s"]),
        ("no CPU limit", deep_merge(core, {"resources": {"limits": {"cpu": None}}}), "hq", ["at '/resources/limits': missing property 'cpu'"]),
        ("a grace period shorter than the drain", deep_merge(core, {"terminationGracePeriodSeconds": 2}), "hq", ["at '/terminationGracePeriodSeconds': minimum"]),
        ("no certificates", {"role": "core"}, "hq", ["certificates: the node needs its TLS files", "certificates.existingSecret", "hq.pem and hq.key"]),
        ("two certificate sources", deep_merge(core, {"certificates": {"certManager": {"enabled": True, "issuerRef": {"name": "ca"}}}}), "hq", ["either certificates.existingSecret or certificates.certManager.enabled, not both"]),
        ("cert-manager without an issuer", {"role": "core", "certificates": {"certManager": {"enabled": True}}}, "hq", ["certificates.certManager.issuerRef.name is required"]),
        ("EZUA without an endpoint", deep_merge(core, {"ezua": {"enabled": True}}), "hq", ["at '/ezua/virtualService/endpoint': minLength"]),
        ("an edge whose release name is no node name", {"role": "edge", "link": {"core": "hq:7000"}, "certificates": {"existingSecret": "x"}}, "edge.one", ["node.name: the release name \"edge.one\" is not a node name"]),
    ]


def check_schema():
    """values.schema.json is draft-07 and self-contained: no remote reference (Helm 3.18.5
    and later refuse them, and an air-gapped site cannot fetch them)."""
    print("== values.schema.json", flush=True)
    schema = helm.Chart.load(str(CHART)).schema
    R.check(schema is not None, "values.schema.json: the chart has one")
    schema = schema if isinstance(schema, dict) else yaml.safe_load(schema)
    R.check(schema.get("$schema") == "http://json-schema.org/draft-07/schema#", "values.schema.json: draft-07")
    refs = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    refs.append(value)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    remote = [r for r in refs if not r.startswith("#/")]
    R.check(refs and not remote, f"values.schema.json: only local references: {remote}")
    R.check(schema.get("required") == ["role"], "values.schema.json: role is required")


def check_refused():
    print("== bad values", flush=True)
    for case, values, release, texts in bad_cases():
        try:
            render(values, release)
            R.check(False, f"bad values ({case}): rendered, not refused")
            continue
        except helm.HelmError as e:
            message = str(e)
        missing = [t for t in texts if t not in message]
        if R.check(not missing, f"bad values ({case}): the message lacks {missing}:\n{message}"):
            first = " ".join(message.split())[-160:]
            print(f"   refused: {case}: ...{first}")


def check_image():
    """The Dockerfile builds what the chart runs: both binaries where the command looks,
    as the non-root user the pod runs as; the build context leaves out what it must."""
    print("== Dockerfile", flush=True)
    root = CHART.parents[1]
    dockerfile = (root / "Dockerfile").read_text()
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", dockerfile, re.MULTILINE | re.IGNORECASE)
    R.check(len(stages) >= 2, f"Dockerfile: multi-stage: {stages}")
    R.check(
        "cargo build --release --locked -p core-node -p edge-node" in dockerfile,
        "Dockerfile: builds both binaries, locked",
    )
    R.check(
        re.search(r"^COPY --from=\S+ /out/bin/ /usr/local/bin/$", dockerfile, re.MULTILINE)
        and "cp target/release/core-node target/release/edge-node /out/bin/" in dockerfile,
        "Dockerfile: both binaries in /usr/local/bin, where the chart's command looks",
    )
    users = re.findall(r"^USER\s+(\d+):(\d+)$", dockerfile, re.MULTILINE)
    pod = defaults["podSecurityContext"]
    R.check(
        users == [(str(pod["runAsUser"]), str(pod["runAsGroup"]))],
        f"Dockerfile: USER {users} is the chart's runAsUser:runAsGroup (numeric, non-root)",
    )
    ignored = (root / ".dockerignore").read_text().split()
    for entry in ("target/", "data/", ".venv/", ".git"):
        R.check(entry in ignored, f".dockerignore: leaves out {entry}")


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = pathlib.Path(sys.argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    lists = {}
    for name, (_, release) in PRESETS.items():
        objects = check_scenario(name, preset(name), release, out_dir)
        if objects is not None:
            lists[name] = objects
    for name, (values, release) in SCENARIOS.items():
        check_scenario(name, values, release, out_dir)
    check_schema()
    check_refused()
    check_image()

    print("\nRendered objects per preset:")
    for name, objects in lists.items():
        values_file, release = PRESETS[name]
        print(f"  {name} ({values_file}, release {release}):")
        for obj in objects:
            ns = obj["metadata"].get("namespace")
            where = f" (namespace {ns})" if ns else ""
            hook = get(obj, "metadata", "annotations", "helm.sh/hook")
            hook = f" (helm {hook} hook)" if hook else ""
            print(f"    {obj['kind']}/{obj['metadata']['name']}{where}{hook}")
    print(f"\n{R.passed} passed, {len(R.failed)} failed")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
