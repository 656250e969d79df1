#!/usr/bin/env python3
"""Schema checks for deploy/: the compose file against the Compose Specification's JSON schema
(vendored in schemas/, from docker-compose 1.29.2, Apache-2.0), every Kubernetes manifest
against the API schemas of kubernetes-validate (strict: unknown fields are errors), and the
Prometheus Operator's ServiceMonitor against the fields Sluice uses. Prints one line per
problem and exits 1 if there is any. Needs: pip install kubernetes-validate==1.37.0
"""
import json
import pathlib
import sys

import jsonschema
import re
import yaml

try:
    import kubernetes_validate
except ImportError:
    sys.exit("kubernetes-validate is missing: pip install kubernetes-validate==1.37.0")

DEPLOY = pathlib.Path(__file__).resolve().parent
K8S_VERSION = "1.32.0"
problems = []


def check_compose():
    schema = json.loads((DEPLOY / "schemas/compose-spec.json").read_text())
    path = DEPLOY / "compose/compose.yaml"
    doc = yaml.safe_load(path.read_text())
    for e in jsonschema.Draft7Validator(schema).iter_errors(doc):
        where = "/".join(str(p) for p in e.absolute_path)
        problems.append(f"{path.relative_to(DEPLOY)}: {where}: {e.message}")
    # Files the compose file mounts must exist (relative to the compose file).
    for name, svc in doc.get("services", {}).items():
        for v in svc.get("volumes", []):
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith("."):
                if not (path.parent / src).exists():
                    problems.append(f"compose service {name}: mounts missing {src}")
    return doc


def check_kubernetes():
    kdir = DEPLOY / "kubernetes"
    kust = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    listed = set(kust["resources"])
    for f in sorted(kdir.glob("*.yaml")):
        if f.name == "kustomization.yaml":
            continue
        if f.name not in listed and f.name not in ("secret.example.yaml", "servicemonitor.yaml", "keda-scaledobject.yaml"):
            problems.append(f"kubernetes/{f.name}: not in kustomization.yaml resources")
        for i, doc in enumerate(yaml.safe_load_all(f.read_text())):
            if doc is None:
                continue
            where = f"kubernetes/{f.name}#{i} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            if doc.get("apiVersion") == "monitoring.coreos.com/v1":
                check_servicemonitor(where, doc)
                continue
            if doc.get("apiVersion") == "keda.sh/v1alpha1":
                check_scaledobject(where, doc, kdir)
                continue
            if doc.get("kind") == "Deployment":
                check_probes(where, doc)
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                problems.append(f"{where}: {'/'.join(map(str, e.path))}: {e.message}")
            except Exception as e:  # unknown kind, bad version
                problems.append(f"{where}: {e}")


def listen_port(env):
    """The port of SLUICE_METRICS_LISTEN in a list of {name, value} or a mapping."""
    if isinstance(env, dict):
        value = env.get("SLUICE_METRICS_LISTEN")
    else:
        value = next((e.get("value") for e in env or [] if e.get("name") == "SLUICE_METRICS_LISTEN"), None)
    return int(value.rsplit(":", 1)[1]) if value else None


def check_probes(where, doc):
    """Sluice pods answer /healthz and /readyz on the metrics listener: the probes must use
    them, on the port the process actually listens on."""
    for c in doc["spec"]["template"]["spec"]["containers"]:
        port = listen_port(c.get("env"))
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        if port is None or ports.get("metrics") != port:
            problems.append(f"{where}: container port 'metrics' {ports.get('metrics')} is not SLUICE_METRICS_LISTEN's {port}")
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = c.get(probe, {}).get("httpGet", {})
            if get.get("path") != path or get.get("port") != "metrics":
                problems.append(f"{where}: {probe} must GET {path} on port 'metrics'")
        annotated = doc["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/port")
        if annotated != str(port):
            problems.append(f"{where}: prometheus.io/port {annotated} is not {port}")


def check_compose_scrapes(doc):
    """The compose Prometheus scrapes each Sluice service on the port it listens on."""
    prom = yaml.safe_load((DEPLOY / "compose/prometheus.yml").read_text())
    for job in prom["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                svc = doc["services"].get(name)
                if svc is None:
                    problems.append(f"compose/prometheus.yml: scrapes unknown service {name}")
                    continue
                env = {k: v for k, v in svc.get("environment", {}).items()}
                if listen_port(env) != sd["port"]:
                    problems.append(f"compose/prometheus.yml: {name} listens on {listen_port(env)}, scraped on {sd['port']}")


def check_scaledobject(where, doc, kdir):
    """KEDA's CRD is not in the Kubernetes schemas: its target must be a Deployment of ours and
    its Prometheus query must name a metric Sluice exports."""
    spec = doc.get("spec", {})
    if doc.get("kind") != "ScaledObject":
        problems.append(f"{where}: unexpected kind")
    target = spec.get("scaleTargetRef", {}).get("name")
    names = set()
    for f in kdir.glob("*.yaml"):
        for d in yaml.safe_load_all(f.read_text()):
            if d and d.get("kind") == "Deployment":
                names.add(d["metadata"]["name"])
    if target not in names:
        problems.append(f"{where}: scaleTargetRef {target!r} is not one of the Deployments {sorted(names)}")
    if not (1 <= spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 0)):
        problems.append(f"{where}: replica counts out of order")
    for t in spec.get("triggers", []):
        if t.get("type") != "prometheus":
            problems.append(f"{where}: trigger {t.get('type')!r} is not prometheus")
            continue
        query = t.get("metadata", {}).get("query", "")
        metrics = set(re.findall(r"sluice_[a-z_]+", query))
        sources = "".join(p.read_text() for p in (DEPLOY / "../crates").glob("*/src/**/*.rs"))
        for m in metrics:
            if f'"{m}"' not in sources:
                problems.append(f"{where}: query names {m}, which no crate exports")
        if not metrics:
            problems.append(f"{where}: query names no sluice metric")


def check_servicemonitor(where, doc):
    spec = doc.get("spec", {})
    if doc.get("kind") != "ServiceMonitor":
        problems.append(f"{where}: unexpected kind")
    if not spec.get("selector"):
        problems.append(f"{where}: spec.selector is required")
    for ep in spec.get("endpoints", []):
        unknown = set(ep) - {"port", "path", "interval", "scrapeTimeout", "scheme"}
        if unknown:
            problems.append(f"{where}: unknown endpoint fields {sorted(unknown)}")


check_compose_scrapes(check_compose())
check_kubernetes()
for p in problems:
    print(p)
sys.exit(1 if problems else 0)
