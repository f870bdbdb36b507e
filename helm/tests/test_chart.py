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
- checks the node's tokens: the Secret the chart makes (both keys, random, kept at an
  upgrade) or the operator's, the variables that carry them into the pod, the read token
  in the ServiceMonitor, the opt-out http.insecureNoToken and its warning;
- checks the NetworkPolicy: HTTP only from the peers the values name, QUIC from anywhere;
- writes the node's rendered config to <out_dir>/<scenario>.toml, and the environment the
  StatefulSet gives the node (the tokens read from the rendered Secret, or stand-ins for
  the operator's own) to <out_dir>/<scenario>.env.json: the Rust test tests/it/chart.rs
  starts the real binaries with them. Prints the object list.

Then it checks that bad values are refused with a message that says what is wrong, and
that the Dockerfile builds what the chart runs.
Prints one line per failure and a closing "N passed, N failed"; exits 1 on a failure.
"""

import base64
import copy
import json
import pathlib
import re
import shutil
import sys
import tempfile
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
# A token as the node takes it ([http] token and read_token, protocol/src/config.rs): 16
# to 256 visible ASCII characters.
VALID_TOKEN = re.compile(r"[\x21-\x7e]{16,256}")
# What the chart draws: 32 letters and digits.
DRAWN_TOKEN = re.compile(r"[A-Za-z0-9]{32}")

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


# Every option on: cert-manager, Ingress with TLS, ServiceMonitor, the operator's token Secret, extra env, topics, budgets, a NodePort with a fixed port, peers in the
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
    # The operator's own Secret, with a read token for the ServiceMonitor.
    "http": {"tokenSecret": {"name": "tether-api", "key": "api-token", "readKey": "metrics.token"}},
    "bridge": {
        "urls": ["nats://nats.nats.svc:4222"],
        "out": ["MESSAGES"],
        "in": ["MESSAGES"],
        "user": "hq",
        "credentialsSecret": {"name": "tether-hq-nats", "passwordKey": "password"},
    },
    "pipeline": {
        "feed": "https://images-api.nasa.gov/search?q=apollo&media_type=image",
        "feedBatch": 3,
        "downloadAllow": ["10.20.0.0/16", "fd00::/8"],
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
        "http": {
            "from": [{"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.9.0/24"]}}],
            "ingressController": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "nginx"}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
                }
            ],
            "prometheus": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prometheus"}}}],
        },
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
    # HQ that takes enrollments: the CA's key from a Secret of its own.
    "core-enrolls": (
        deep_merge(FULL_CORE, {"certificates": {"enrollment": {"caKeySecret": "tether-hq-ca-key"}}}),
        "hq",
    ),
    # An edge that joins with an enrollment code.
    "edge-enroll": (
        deep_merge(
            {k: v for k, v in preset("edge").items() if k != "certificates"},
            {"certificates": {"enrollment": {"codeSecret": "tether-bravo-enroll"}}},
        ),
        "bravo",
    ),
    # HQ on two machines: two cores of one release on a NATS backbone.
    "core-backbone": (
        deep_merge(
            preset("core"),
            {
                "cores": 2,
                "bridge": {
                    "urls": ["nats://nats-1.nats:4222", "nats://nats-2.nats:4222"],
                    "backbone": True,
                    "replicas": 3,
                    "credentialsSecret": {"name": "tether-hq-nats", "credsKey": "core.creds"},
                    "tlsSecret": {"name": "tether-hq-nats-tls", "certKey": "tls.crt", "keyKey": "tls.key"},
                },
            },
        ),
        "hq",
    ),
    # An edge of that HQ: it fails over to the second core.
    "edge-failover": (
        deep_merge(preset("edge"), {"link": {"coreName": "hq-0", "failover": ["hq-1@hq-1.example.org:7000"]}}),
        "alpha",
    ),
    # The lab's opt-out: no token at all.
    "insecure": (
        deep_merge(preset("edge"), {"http": {"insecureNoToken": True}, "metrics": {"serviceMonitor": {"enabled": True}}}),
        "alpha",
    ),
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
    cores = values.get("cores", 1)
    R.check(
        spec["replicas"] == cores,
        f"{name}: the StatefulSet runs {cores} pod(s), each a node of its own (the store is single-writer)",
    )
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
    bridge = values.get("bridge") or {}
    if bridge.get("urls"):
        b = config.get("bridge", {})
        R.check(
            b.get("urls") == bridge["urls"]
            and b.get("out") == bridge.get("out", [])
            and b.get("in") == bridge.get("in", [])
            and "password" not in b and "token" not in b,
            f"{name}: [bridge] has the values' urls, out and in, and no secret: {b}",
        )
        container_env = {e["name"]: e for e in c.get("env", [])}
        creds = bridge.get("credentialsSecret") or {}
        for var, key in (("TETHER_BRIDGE__PASSWORD", "passwordKey"), ("TETHER_BRIDGE__TOKEN", "tokenKey")):
            ref = get(container_env, var, "valueFrom", "secretKeyRef")
            want = {"name": creds["name"], "key": creds[key]} if creds.get(key) else None
            R.check(ref == want, f"{name}: {var} comes from {want}, not {ref}")
        # Credentials and TLS as files: each from its Secret, where the config says.
        projected = [
            src["secret"]
            for src in get(volumes, "nats", "projected", "sources", default=[]) or []
            if "secret" in src
        ]
        files = {
            f"/etc/tether/nats/{i['path']}": (src["name"], i["key"]) for src in projected for i in src.get("items", [])
        }
        tls = bridge.get("tlsSecret") or {}
        wanted_files = {}
        for config_key, secret, key in (
            ("nkey_seed_file", creds.get("name"), creds.get("nkeySeedKey")),
            ("creds_file", creds.get("name"), creds.get("credsKey")),
            ("tls_ca_file", tls.get("name"), tls.get("caKey", "ca.crt") if tls.get("name") else None),
            ("tls_cert_file", tls.get("name"), tls.get("certKey")),
            ("tls_key_file", tls.get("name"), tls.get("keyKey")),
        ):
            if secret and key:
                wanted_files[b.get(config_key)] = (secret, key)
            else:
                R.check(config_key not in b, f"{name}: no {config_key} without its Secret key: {b}")
        R.check(
            None not in wanted_files and files == wanted_files,
            f"{name}: the NATS files {sorted(wanted_files)} are mounted from their Secrets: {files}",
        )
        if files:
            R.check(
                get(mounts, "/etc/tether/nats", "readOnly") is True
                and get(volumes, "nats", "projected", "defaultMode", default=0o644) & 0o007 == 0,
                f"{name}: the NATS files are a read-only mount no other user reads",
            )
        R.check(
            b.get("backbone", False) == bool(bridge.get("backbone")),
            f"{name}: [bridge] backbone is the values' {bridge.get('backbone')}: {b}",
        )
    else:
        R.check("bridge" not in config, f"{name}: no [bridge] without bridge.urls")
    # Several cores: each pod is named after its ordinal.
    container_env = {e["name"]: e for e in c.get("env", [])}
    if cores > 1:
        R.check(
            get(container_env, "TETHER_POD_INDEX", "valueFrom", "fieldRef", "fieldPath")
            == "metadata.labels['apps.kubernetes.io/pod-index']"
            and get(container_env, "TETHER_NODE__NAME", "value") == f"{node_name}-$(TETHER_POD_INDEX)",
            f"{name}: each core is named {node_name}-<ordinal> from its pod's index: {container_env}",
        )
    else:
        R.check("TETHER_NODE__NAME" not in container_env, f"{name}: one node keeps the config's name")
    link = config["link"]
    R.check(link["demo_certs"] is False, f"{name}: demo_certs is false")
    link_defaults = yaml.safe_load((CHART / "values.yaml").read_text())["link"]
    for key, value in (("keep_alive", "keepAlive"), ("idle_timeout", "idleTimeout")):
        want = get(values, "link", value) or link_defaults[value]
        R.check(link.get(key) == want, f"{name}: link.{key} {link.get(key)!r} is link.{value} {want!r}")
    code_secret = get(values, "certificates", "enrollment", "codeSecret")
    if code_secret:
        # Enrolled at the first start: the files live (and are renewed) on the data volume.
        R.check(
            link["certs_dir"] == f"{data_dir}/certs" and "certs" not in volumes,
            f"{name}: an enrolling edge keeps certs_dir {link['certs_dir']} on its data volume, no Secret",
        )
        inits = pod.get("initContainers", [])
        init = inits[0] if len(inits) == 1 else {}
        env = {e["name"]: e for e in init.get("env", [])}
        code_ref = get(env, "TETHER_ENROLL_CODE", "valueFrom", "secretKeyRef")
        init_mounts = {m["mountPath"]: m for m in init.get("volumeMounts", [])}
        R.check(
            init.get("command") == ["/usr/local/bin/edge-node"]
            and init.get("args") == ["--config", str(config_path), "enroll"]
            and code_ref == {"name": code_secret, "key": get(values, "certificates", "enrollment", "codeKey") or "code"}
            and data_dir in init_mounts and not init_mounts[data_dir].get("readOnly"),
            f"{name}: an init container enrolls with the code from Secret {code_secret}: {init}",
        )
    certs_mount = None if code_secret else mounts.get(link["certs_dir"])
    certs_volume = volumes.get(certs_mount["name"]) if certs_mount else None
    sources = [src.get("secret") for src in get(certs_volume or {}, "projected", "sources") or []]
    R.check(
        code_secret or (sources and all(sources) and certs_mount.get("readOnly")),
        f"{name}: certs_dir {link['certs_dir']} is a read-only mount of Secrets",
    )
    if sources and all(sources):
        paths = sorted(i["path"] for src in sources for i in src.get("items", []))
        if cores > 1:
            wanted = [CA_CERT_FILE] + [f"{node_name}-{i}.{ext}" for i in range(cores) for ext in ("pem", "key")]
        else:
            wanted = [CA_CERT_FILE, f"{node_name}.pem", f"{node_name}.key"]
        ca_key = get(values, "certificates", "enrollment", "caKeySecret")
        if ca_key:
            wanted.append("ca.key")
            R.check(
                any(src["name"] == ca_key for src in sources),
                f"{name}: ca.key comes from Secret {ca_key}: {sources}",
            )
        wanted = sorted(wanted)
        R.check(paths == wanted, f"{name}: the certificates are mounted as {wanted}, not {paths}")
        mode = certs_volume["projected"].get("defaultMode", 0o644)
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
        failover = get(values, "link", "failover") or []
        R.check(link.get("failover") == failover, f"{name}: link.failover is the values' {failover}: {link}")

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
    pods = [f"{sts['metadata']['name']}-{i}" for i in range(cores)]
    for svc in services:
        selector = dict(svc["spec"]["selector"])
        # A core's own QUIC Service (several cores) picks its pod by name too.
        pod_name = selector.pop("statefulset.kubernetes.io/pod-name", pods[0])
        R.check(
            selector.items() <= pod_labels.items() and pod_name in pods,
            f"{name}: Service {svc['metadata']['name']} selects the pod",
        )
    udp = [s for s in services if any(p.get("protocol") == "UDP" for p in s["spec"]["ports"])]
    if role == "core" and cores > 1:
        # One QUIC Service per core, each selecting its pod alone.
        want = sorted(f"{sts['metadata']['name']}-{i}" for i in range(cores))
        got = {s["metadata"]["name"]: s["spec"]["selector"].get("statefulset.kubernetes.io/pod-name") for s in udp}
        R.check(
            len(udp) == cores and sorted(got.values()) == want,
            f"{name}: one QUIC Service per core, each for its pod: {got}",
        )
    elif role == "core":
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


def token_source(values, objects):
    """Where the values say the node's tokens come from: None for none
    (http.insecureNoToken), else {name, key, readKey, generated}."""
    http = values.get("http", {})
    if http.get("insecureNoToken"):
        return None
    secret = http.get("tokenSecret", {})
    if secret.get("name"):
        return {"name": secret["name"], "key": secret.get("key", "token"), "readKey": secret.get("readKey", ""), "generated": False}
    sts = by_kind(objects, "StatefulSet")
    fullname = sts[0]["metadata"]["name"] if sts else "?"
    return {"name": f"{fullname}-http-token", "key": "token", "readKey": "read-token", "generated": True}


def decoded(secret, key):
    """A key of a rendered Secret's data, decoded, or None."""
    value = get(secret, "data", key)
    try:
        return base64.b64decode(value, validate=True).decode() if isinstance(value, str) else None
    except (ValueError, UnicodeDecodeError):
        return None


def check_drawn_tokens(label, secret):
    """A Secret the chart made: both keys, each a token the node takes, drawn at random,
    the two different."""
    data = secret.get("data", {}) if secret else {}
    R.check(sorted(data) == ["read-token", "token"], f"{label}: keys token and read-token: {sorted(data)}")
    token, read_token = decoded(secret, "token"), decoded(secret, "read-token")
    for key, value in (("token", token), ("read-token", read_token)):
        R.check(
            value is not None and DRAWN_TOKEN.fullmatch(value) and VALID_TOKEN.fullmatch(value),
            f"{label}: {key} is 32 random letters and digits (a valid token): {value!r}",
        )
    R.check(token != read_token, f"{label}: the read token differs from the token")
    return token, read_token


def check_tokens(name, values, objects, notes):
    """The node's tokens: from the Secret the chart makes or the operator's, into the pod
    as TETHER_HTTP__TOKEN and TETHER_HTTP__READ_TOKEN, never in the ConfigMap; or none,
    with http.insecureNoToken, and a loud warning. Returns the environment the
    StatefulSet gives the node, the Secrets' values resolved (stand-ins for the
    operator's own Secret, which is not rendered)."""
    source = token_source(values, objects)
    sts, cm = by_kind(objects, "StatefulSet"), by_kind(objects, "ConfigMap")
    if not sts or not cm:
        return {}
    container = sts[0]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container.get("env", [])}
    config = tomllib.loads(next(iter(cm[0]["data"].values())))
    http = config["http"]
    secrets = {s["metadata"]["name"]: s for s in by_kind(objects, "Secret")}
    R.check(
        "token" not in http and "read_token" not in http,
        f"{name}: no token in the ConfigMap (the Secret carries them): {sorted(http)}",
    )
    if source is None:
        R.check(http.get("insecure_no_token") is True, f"{name}: insecureNoToken renders insecure_no_token = true")
        R.check(not secrets, f"{name}: no token Secret without a token: {list(secrets)}")
        R.check(
            not [v for v in env if v.startswith("TETHER_HTTP__")],
            f"{name}: no token variable without a token: {list(env)}",
        )
        R.check(
            "WARNING: http.insecureNoToken is set: this node has NO TOKEN" in notes
            and notes.lstrip().startswith("####"),
            f"{name}: NOTES opens with a loud warning that the node has no token",
        )
    else:
        R.check(http.get("insecure_no_token") is False, f"{name}: insecure_no_token = false")
        R.check("NO TOKEN" not in notes, f"{name}: no warning with a token")
        for var, key in (("TETHER_HTTP__TOKEN", source["key"]), ("TETHER_HTTP__READ_TOKEN", source["readKey"])):
            ref = get(env, var, "valueFrom", "secretKeyRef")
            want = {"name": source["name"], "key": key} if key else None
            R.check(ref == want, f"{name}: {var} from Secret {want}: {ref}")
            if key:
                # kubectl's JSONPath needs a dot in a key escaped.
                read = (
                    f"kubectl -n {NAMESPACE} get secret {source['name']} -o jsonpath="
                    f"'{{.data.{key.replace('.', chr(92) + '.')}}}' | base64 -d"
                )
                R.check(read in notes, f"{name}: NOTES shows how to read {key}: {read}")
        if source["generated"]:
            R.check(list(secrets) == [source["name"]], f"{name}: the chart makes the Secret {source['name']}: {list(secrets)}")
            secret = secrets.get(source["name"])
            if secret:
                check_drawn_tokens(f"{name}: Secret {source['name']}", secret)
                R.check(
                    get(secret, "metadata", "annotations", "helm.sh/resource-policy") == "keep",
                    f"{name}: the token Secret is kept after `helm uninstall`",
                )
                R.check(secret.get("type") == "Opaque", f"{name}: the token Secret is Opaque")
        else:
            R.check(not secrets, f"{name}: no Secret made beside the operator's {source['name']}: {list(secrets)}")

    resolved = {}
    for var, entry in env.items():
        if "value" in entry:
            # Kubernetes expands $(VAR) from the variables before it.
            resolved[var] = re.sub(r"\$\(([A-Za-z0-9_]+)\)", lambda m: resolved.get(m.group(1), m.group(0)), entry["value"])
            continue
        if get(entry, "valueFrom", "fieldRef", "fieldPath") == "metadata.labels['apps.kubernetes.io/pod-index']":
            resolved[var] = "0"  # The first pod's.
            continue
        ref = get(entry, "valueFrom", "secretKeyRef")
        if ref is None:
            continue
        if ref["name"] in secrets:
            resolved[var] = decoded(secrets[ref["name"]], ref["key"])
        else:
            # The operator's Secret, not rendered: a stand-in of the same shape.
            resolved[var] = f"stand-in-for-{ref['name']}-{ref['key']}"
    return resolved


def check_token_kept():
    """An upgrade keeps the tokens: the Secret's data comes from the cluster's Secret of
    the same name in the release's namespace, key by key. Offline there is no cluster, so
    the chart is copied and its lookup answered from a made-up cluster; and two renders
    without a cluster draw different tokens (nothing fixed in the chart)."""
    print("== the token Secret across upgrades", flush=True)
    values, release = preset("core"), PRESETS["core"][1]
    fresh = [by_kind(objects_of(render(values, release))[0], "Secret") for _ in range(2)]
    drawn = [check_drawn_tokens("token Secret, no cluster", s[0]) for s in fresh if s]
    R.check(len(drawn) == 2 and drawn[0] != drawn[1], "token Secret: each render without a cluster draws new tokens")
    name = fresh[0][0]["metadata"]["name"] if fresh and fresh[0] else "?"

    with tempfile.TemporaryDirectory() as tmp:
        chart = pathlib.Path(tmp) / "tether"
        shutil.copytree(CHART, chart)
        lookups = 0
        for path in (chart / "templates").rglob("*"):
            if path.is_file():
                text, n = re.subn(
                    r'\blookup ("[^"]*") ("[^"]*") (\S+) (\S+)',
                    r'(include "test.lookup" (list $ \1 \2 \3 \4) | fromJson)',
                    path.read_text(),
                )
                lookups += n
                path.write_text(text)
        R.check(lookups == 1, f"token Secret: the chart asks the cluster once, for the token Secret ({lookups} lookups)")
        # The made-up cluster: objects by "apiVersion/kind/namespace/name", in values.
        (chart / "templates" / "_test_lookup.tpl").write_text(
            '{{- define "test.lookup" -}}\n'
            '{{- $root := index . 0 }}\n'
            '{{- $key := printf "%s/%s/%s/%s" (index . 1) (index . 2) (index . 3) (index . 4) }}\n'
            "{{- get $root.Values.testCluster $key | default dict | toJson }}\n"
            "{{- end }}\n"
        )
        schema = json.loads((chart / "values.schema.json").read_text())
        schema["properties"]["testCluster"] = {"type": "object"}
        (chart / "values.schema.json").write_text(json.dumps(schema))
        copy_chart = helm.Chart.load(str(chart))
        old_token, old_read = "kept-token-from-the-first-install", "kept-read-token-from-the-first-install"
        b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731

        def upgrade(cluster):
            """The tokens an upgrade renders into the Secret, and the pod's annotations."""
            rendered = copy_chart.render(
                deep_merge(values, {"testCluster": cluster}), name=release, namespace=NAMESPACE, is_upgrade=True
            )
            objects = objects_of(rendered)[0]
            secret = (by_kind(objects, "Secret") or [None])[0]
            annotations = get(by_kind(objects, "StatefulSet")[0], "spec", "template", "metadata", "annotations")
            return (decoded(secret, "token"), decoded(secret, "read-token")), annotations

        both = {f"v1/Secret/{NAMESPACE}/{name}": {"data": {"token": b64(old_token), "read-token": b64(old_read)}}}
        got, first = upgrade(both)
        R.check(got == (old_token, old_read), f"token Secret: an upgrade keeps both tokens: {got}")
        _, second = upgrade(both)
        R.check(
            first == second and "checksum/token" in first,
            f"token Secret: the pod's checksum/token stays across upgrades (no restart): {first} {second}",
        )
        only_token = {f"v1/Secret/{NAMESPACE}/{name}": {"data": {"token": b64(old_token)}}}
        (token, read_token), _ = upgrade(only_token)
        R.check(
            token == old_token and read_token and DRAWN_TOKEN.fullmatch(read_token),
            f"token Secret: an upgrade keeps the token and draws the missing read token: {token!r} {read_token!r}",
        )
        elsewhere = {f"v1/Secret/other/{name}": both[f"v1/Secret/{NAMESPACE}/{name}"]}
        (token, _), _ = upgrade(elsewhere)
        R.check(token not in (None, old_token), "token Secret: a Secret of that name in another namespace is not taken")


def check_network_policy(name, values, objects, release):
    """HTTP only from the peers the values name (the Ingress controller's with an Ingress,
    Prometheus' with the ServiceMonitor, EZUA's gateway with EZUA) and the chart's test
    pod; QUIC (core) from networkPolicy.link.from, or anyone; no other port."""
    merged = deep_merge(yaml.safe_load((CHART / "values.yaml").read_text()), values)
    policies = by_kind(objects, "NetworkPolicy")
    if not merged["networkPolicy"]["enabled"]:
        R.check(not policies, f"{name}: no NetworkPolicy unless enabled")
        return
    R.check(len(policies) == 1, f"{name}: one NetworkPolicy")
    if not policies:
        return
    np, spec = merged["networkPolicy"], policies[0]["spec"]
    label = f"{name}: NetworkPolicy"
    sts = by_kind(objects, "StatefulSet")
    pod_labels = sts[0]["spec"]["template"]["metadata"]["labels"] if sts else {}
    R.check(spec["podSelector"]["matchLabels"].items() <= pod_labels.items(), f"{label} selects the node's pod")
    R.check(spec["policyTypes"] == ["Ingress"], f"{label}: inbound only: {spec['policyTypes']}")
    want_http = list(np["http"]["from"])
    if merged["ingress"]["enabled"]:
        want_http += np["http"]["ingressController"]
    if merged["metrics"]["serviceMonitor"]["enabled"]:
        want_http += np["http"]["prometheus"]
    if merged["ezua"]["enabled"]:
        ap = merged["ezua"]["authorizationPolicy"]
        want_http.append({
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ap["namespace"]}},
            "podSelector": {"matchLabels": ap["matchLabels"]},
        })
    tests = [o for o in by_kind(objects, "Pod") if get(o, "metadata", "annotations", "helm.sh/hook") == "test"]
    test_peer = {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": release, "app.kubernetes.io/component": "test"}}}
    R.check(
        tests and test_peer["podSelector"]["matchLabels"].items() <= tests[0]["metadata"]["labels"].items(),
        f"{label}: the test pod's peer selects the `helm test` pod",
    )
    want_http.append(test_peer)
    rules = spec.get("ingress", [])
    R.check(all(r.get("ports") for r in rules), f"{label}: every rule names its ports (none lets every port in)")
    http = [r for r in rules if {"port": "http", "protocol": "TCP"} in r.get("ports", [])]
    R.check(
        len(http) == 1 and http[0]["ports"] == [{"port": "http", "protocol": "TCP"}],
        f"{label}: one rule for the HTTP port: {http}",
    )
    if http:
        R.check("from" in http[0], f"{label}: HTTP is not let in from everywhere")
        R.check(http[0].get("from") == want_http, f"{label}: HTTP only from {want_http}: {http[0].get('from')}")
    quic = [r for r in rules if {"port": "quic", "protocol": "UDP"} in r.get("ports", [])]
    if values["role"] == "core":
        R.check(len(quic) == 1 and quic[0]["ports"] == [{"port": "quic", "protocol": "UDP"}], f"{label}: one rule for QUIC: {quic}")
        if quic:
            R.check(
                quic[0].get("from") == (np["link"]["from"] or None),
                f"{label}: QUIC from {np['link']['from'] or 'anywhere'}: {quic[0].get('from')}",
            )
        R.check(len(rules) == 2, f"{label}: HTTP and QUIC only: {rules}")
    else:
        R.check(not quic and len(rules) == 1, f"{label}: an edge lets in HTTP only: {rules}")


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
            source = token_source(values, objects)
            want = (
                {"type": "Bearer", "credentials": {"name": source["name"], "key": source["readKey"]}}
                if source
                else None
            )
            got = get(spec, "endpoints", 0, "authorization")
            R.check(got == want, f"{label}: scrapes with the read token {want}: {got}")
            R.check(
                set(get(spec, "endpoints", 0, default={}))
                <= {"port", "path", "scheme", "interval", "scrapeTimeout", "authorization"},
                f"{label}: endpoint fields {sorted(get(spec, 'endpoints', 0, default={}))}",
            )
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
            secret_names = [
                src["secret"]["name"]
                for v in secret or []
                for src in get(v, "projected", "sources") or []
                if "secret" in src
            ]
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
    env = check_tokens(name, values, objects, notes)
    check_network_policy(name, values, objects, release)
    check_custom(name, values, objects, release)
    if out_dir is not None and text is not None:
        (out_dir / f"{name}.toml").write_text(text)
        (out_dir / f"{name}.env.json").write_text(json.dumps(env, indent=2, sort_keys=True) + "\n")
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
        ("an enrollment code and a Secret at once", deep_merge(edge, {"certificates": {"enrollment": {"codeSecret": "code"}}}), "alpha", ["set one of certificates.existingSecret, certificates.certManager.enabled and certificates.enrollment.codeSecret"]),
        ("an enrollment code at the core", {"role": "core", "certificates": {"enrollment": {"codeSecret": "code"}}}, "hq", ["certificates.enrollment.codeSecret is for an edge"]),
        ("a NATS password without a user", deep_merge(edge, {"bridge": {"urls": ["nats://n:4222"], "credentialsSecret": {"name": "s", "passwordKey": "p"}}}), "alpha", ["bridge.credentialsSecret.passwordKey needs bridge.user"]),
        ("the CA's key at an edge", deep_merge(edge, {"certificates": {"enrollment": {"caKeySecret": "ca-key"}}}), "alpha", ["certificates.enrollment.caKeySecret is for the core"]),
        ("cert-manager without an issuer", {"role": "core", "certificates": {"certManager": {"enabled": True}}}, "hq", ["certificates.certManager.issuerRef.name is required"]),
        ("EZUA without an endpoint", deep_merge(core, {"ezua": {"enabled": True}}), "hq", ["at '/ezua/virtualService/endpoint': minLength"]),
        ("no token at all", deep_merge(core, {"http": {"tokenSecret": {"generate": False}}}), "hq", ["the node serves HTTP beyond its pod, so it needs a token", "leave http.tokenSecret.generate on", "http.tokenSecret.name", "http.insecureNoToken=true"]),
        ("a token Secret and no token at once", deep_merge(core, {"http": {"insecureNoToken": True, "tokenSecret": {"name": "tether-api"}}}), "hq", ["set either http.tokenSecret.name (tether-api) or http.insecureNoToken, not both"]),
        ("one key for both tokens", deep_merge(core, {"http": {"tokenSecret": {"name": "tether-api", "key": "token", "readKey": "token"}}}), "hq", ["http.tokenSecret.readKey \"token\" is http.tokenSecret.key too", "the read token must differ"]),
        ("a ServiceMonitor without a read token", deep_merge(core, {"http": {"tokenSecret": {"name": "tether-api"}}, "metrics": {"serviceMonitor": {"enabled": True}}}), "hq", ["metrics.serviceMonitor", "Secret tether-api has none named", "set http.tokenSecret.readKey"]),
        ("insecureNoToken as a string", deep_merge(core, {"http": {"insecureNoToken": "yes"}}), "hq", ["at '/http/insecureNoToken': got string, want boolean"]),
        ("a token Secret name that is no Secret name", deep_merge(core, {"http": {"tokenSecret": {"name": "Tether API"}}}), "hq", ["at '/http/tokenSecret/name': 'Tether API' does not match pattern"]),
        ("a misspelt NetworkPolicy peer", deep_merge(core, {"networkPolicy": {"http": {"from": [{"namespaceSelecter": {}}]}}}), "hq", ["at '/networkPolicy/http/from/0'", "additional properties 'namespaceSelecter' not allowed"]),
        ("an empty NetworkPolicy peer", deep_merge(core, {"networkPolicy": {"http": {"prometheus": [{}]}}}), "hq", ["at '/networkPolicy/http/prometheus/0': minProperties"]),
        ("two kinds of NATS credentials", deep_merge(core, {"bridge": {"urls": ["nats://n:4222"], "user": "u", "credentialsSecret": {"name": "s", "passwordKey": "p", "credsKey": "c"}}}), "hq", ["set one kind of NATS credentials"]),
        ("a NATS client certificate without its key", deep_merge(core, {"bridge": {"urls": ["nats://n:4222"], "tlsSecret": {"name": "t", "certKey": "tls.crt"}}}), "hq", ["certKey and keyKey go together"]),
        ("several cores without a backbone", deep_merge(core, {"cores": 2}), "hq", ["cores: 2 cores of one HQ share their entries through NATS", "bridge.backbone=true"]),
        ("several edges in one release", deep_merge(edge, {"cores": 2}), "alpha", ["cores: an edge is one node"]),
        ("several cores with cert-manager", deep_merge(core, {"cores": 2, "bridge": {"urls": ["nats://n:4222"], "backbone": True}, "certificates": {"existingSecret": "", "certManager": {"enabled": True, "issuerRef": {"name": "ca"}}}}), "hq", ["certificates come from certificates.existingSecret"]),
        ("a failover core without a name", deep_merge(edge, {"link": {"failover": ["hq-1.example.org:7000"]}}), "alpha", ["at '/link/failover/0'", "does not match pattern"]),
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
    check_token_kept()
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
