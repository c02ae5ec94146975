"""Offline checks of galscale's deployment files; run them after editing, before applying.

    python cluster/check.py                  # every file under cluster/
    python cluster/check.py my-rayjob.yaml   # your own copy

What is checked, with nothing but local files (no cluster, no cloud account):

- KubeRay objects (RayCluster, RayJob) against the OpenAPI v3 schema of KubeRay's own CRDs
  (`--crd-dir`, default ../shared/kuberay-crds next to the repository). Unknown fields are
  errors, as with `kubectl apply --validate=strict`: a misspelt field is caught, not pruned.
- Every pod template inside them, and every core Kubernetes object (ServiceAccount, ...), against
  the Kubernetes core schemas shipped by the `kubernetes-validate` package (strict mode); and
  every `rayStartParams` key against the options of the installed `ray start`.
- Ray cluster launcher configs against Ray's own launcher schema (the same check as `ray up`).
- Exposure: no LoadBalancer / NodePort / Ingress / host ports for Ray, token authentication not
  disabled, no launcher security-group rule that opens Ray's ports.
- Credentials: no cloud keys, private keys or literal secrets in any file.

Each check returns a list of human-readable problems; an empty list means the check passed.
"""

from __future__ import annotations

import argparse
import copy
import functools
import gzip
import ipaddress
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

CLUSTER_DIR = Path(__file__).resolve().parent
REPO_ROOT = CLUSTER_DIR.parent
DEFAULT_CRD_DIR = REPO_ROOT.parent / "shared" / "kuberay-crds"
# Kubernetes version the core schemas are taken from (oldest EKS/GKE standard-support line).
K8S_VERSION = "1.33"
KUBERAY_KINDS = {"RayCluster": "rayclusters", "RayJob": "rayjobs", "RayService": "rayservices"}
# Ray ports that must never be reachable from outside the cluster: GCS, dashboard/job API,
# Ray client, metrics export.
RAY_PORTS = (6379, 8265, 10001, 8080)

Doc = dict[str, Any]
# libyaml's loader when PyYAML was built with it (the CRDs are 17,000 lines: 40x faster).
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# ---------------------------------------------------------------------------------- loading


def load_documents(path: Path) -> list[Doc]:
    """All non-empty YAML documents of a file (anchors and aliases resolved)."""
    with open(path) as f:
        return [d for d in yaml.load_all(f, Loader=_YAML_LOADER) if d]


def is_launcher_config(doc: Doc) -> bool:
    """A Ray cluster launcher config (`ray up`), as opposed to a Kubernetes object."""
    return "available_node_types" in doc and "provider" in doc and "kind" not in doc


def deployment_files(root: Path = CLUSTER_DIR) -> list[Path]:
    """The YAML files under `root` (manifests and launcher configs)."""
    return sorted(p for p in root.rglob("*") if p.suffix in {".yaml", ".yml"} and p.is_file())


# ------------------------------------------------------------------------- KubeRay schemas


def strict_schema(schema: Any) -> Any:
    """Copy of an OpenAPI v3 CRD schema in which unknown fields are errors.

    The API server prunes (or, with strict field validation, rejects) fields that a structural
    schema does not declare; plain JSON Schema accepts them. So every object schema that lists
    `properties` and neither declares `additionalProperties` nor preserves unknown fields
    (`x-kubernetes-preserve-unknown-fields`) gets `additionalProperties: false`.
    """
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@functools.lru_cache(maxsize=4)
def load_crd_schemas(crd_dir: Path = DEFAULT_CRD_DIR) -> dict[tuple[str, str], Any]:
    """Strict validation schema per (apiVersion, kind) from KubeRay CRD files in `crd_dir`.

    Reads `ray.io_<plural>.yaml` or `.yaml.gz`. Raises FileNotFoundError when none is there.
    Cached per folder: treat the result as read-only.
    """
    schemas: dict[tuple[str, str], Any] = {}
    for path in sorted(crd_dir.glob("ray.io_*.yaml*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as f:
            crd = yaml.load(f, Loader=_YAML_LOADER)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = version["schema"]["openAPIV3Schema"]
            schemas[(f"{group}/{version['name']}", kind)] = strict_schema(schema)
    if not schemas:
        raise FileNotFoundError(f"no KubeRay CRD (ray.io_*.yaml[.gz]) in {crd_dir}")
    return schemas


def _format_error(where: str, error: Any) -> str:
    path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"{where}: {path}: {error.message}"


def crd_errors(doc: Doc, schemas: dict[tuple[str, str], Any], where: str = "") -> list[str]:
    """Schema violations of one KubeRay object; [] for objects of other kinds."""
    import jsonschema

    if doc.get("kind") not in KUBERAY_KINDS:
        return []
    key = (doc.get("apiVersion", ""), doc["kind"])
    if key not in schemas:
        return [f"{where}: no CRD schema for {key[1]} {key[0]}"]
    validator = jsonschema.Draft7Validator(schemas[key])
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [_format_error(where or doc["kind"], e) for e in errors]


# ------------------------------------------------------------------ Kubernetes core schemas


def pod_templates(doc: Doc) -> Iterator[tuple[str, Doc]]:
    """(location, pod template) for every pod template inside a KubeRay object."""
    spec = doc.get("spec") or {}
    cluster_specs = []
    if doc.get("kind") == "RayCluster":
        cluster_specs.append(("spec", spec))
    elif doc.get("kind") == "RayJob":
        if "rayClusterSpec" in spec:
            cluster_specs.append(("spec.rayClusterSpec", spec["rayClusterSpec"]))
        if "submitterPodTemplate" in spec:
            yield "spec.submitterPodTemplate", spec["submitterPodTemplate"]
    elif doc.get("kind") == "RayService" and "rayClusterConfig" in spec:
        cluster_specs.append(("spec.rayClusterConfig", spec["rayClusterConfig"]))
    for prefix, cluster in cluster_specs:
        head = cluster.get("headGroupSpec") or {}
        if "template" in head:
            yield f"{prefix}.headGroupSpec.template", head["template"]
        for i, group in enumerate(cluster.get("workerGroupSpecs") or []):
            if "template" in group:
                name = group.get("groupName", i)
                yield f"{prefix}.workerGroupSpecs[{name}].template", group["template"]


def _core_validate(obj: Doc, where: str, k8s_version: str) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [_format_error(where, e)]
    except kubernetes_validate.utils.SchemaNotFoundError as e:
        return [f"{where}: {e.message}"]
    return []


def core_errors(doc: Doc, where: str = "", k8s_version: str = K8S_VERSION) -> list[str]:
    """Core-schema violations: pod templates of KubeRay objects, or the object itself."""
    if doc.get("kind") in KUBERAY_KINDS:
        problems = []
        for loc, template in pod_templates(doc):
            wrapped = {"apiVersion": "v1", "kind": "PodTemplate",
                       "metadata": {"name": "check"}, "template": template}
            problems += _core_validate(wrapped, f"{where}: {loc}", k8s_version)
        return problems
    return _core_validate(doc, where or str(doc.get("kind")), k8s_version)


def ray_start_param_errors(doc: Doc, where: str = "") -> list[str]:
    """rayStartParams keys that are not options of this Ray's `ray start` (the CRD allows any)."""
    from ray.scripts.scripts import start

    options = {opt for param in start.params for opt in param.opts}
    return [f"{where}: {path}: `ray start` has no option --{key}"
            for path, node in _walk(doc) if path.endswith("rayStartParams")
            and isinstance(node, dict) for key in node if f"--{key}" not in options]


# ---------------------------------------------------------------------- launcher configs


def launcher_errors(config: Doc, where: str = "") -> list[str]:
    """Ray cluster launcher schema violations (the validation `ray up` runs)."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        validate_config(prepare_config(copy.deepcopy(config)))
    except (jsonschema.ValidationError, ValueError, RuntimeError) as e:
        message = e.message if isinstance(e, jsonschema.ValidationError) else str(e)
        return [f"{where}: {message}"]
    return []


# --------------------------------------------------------------------------------- exposure


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def _is_disabled_auth(env_entry: Any) -> bool:
    return (
        isinstance(env_entry, dict)
        and env_entry.get("name") == "RAY_AUTH_MODE"
        and str(env_entry.get("value", "")).strip().lower() not in {"token"}
    )


def exposure_problems(doc: Doc, where: str = "") -> list[str]:
    """Ways a Kubernetes object could expose Ray outside the cluster or switch auth off."""
    where = where or str(doc.get("kind"))
    problems = []
    kind = doc.get("kind")
    if kind in {"Ingress", "Route", "Gateway", "HTTPRoute", "GRPCRoute", "TCPRoute"}:
        problems.append(f"{where}: {kind} objects expose services outside the cluster")
    if kind == "Service" and (doc.get("spec") or {}).get("type") in {"LoadBalancer", "NodePort"}:
        problems.append(f"{where}: Service of type {doc['spec']['type']}")
    for path, node in _walk(doc):
        key = path.rsplit(".", 1)[-1]
        if key == "serviceType" and node not in (None, "ClusterIP"):
            problems.append(f"{where}: {path} is {node}; only ClusterIP keeps Ray private")
        elif key == "type" and node in {"LoadBalancer", "NodePort"} and ".headService" in path:
            problems.append(f"{where}: {path} is {node}")
        elif key in {"enableIngress", "hostNetwork"} and node is True:
            problems.append(f"{where}: {path} is true")
        elif key == "hostPort" and node:
            problems.append(f"{where}: {path} maps a container port onto the node")
        elif key == "authOptions" and isinstance(node, dict) and node.get("mode") != "token":
            problems.append(f"{where}: {path}.mode must be token (Ray token authentication)")
        elif key == "env" and isinstance(node, list):
            problems += [f"{where}: {path} sets RAY_AUTH_MODE={e.get('value')!r}"
                         for e in node if _is_disabled_auth(e)]
        elif isinstance(node, str) and re.search(r"RAY_AUTH_MODE=(?!token\b)", node):
            problems.append(f"{where}: {path} sets RAY_AUTH_MODE to something other than token")
        elif isinstance(node, str) and re.search(r"--dashboard-host[= ]", node):
            problems.append(f"{where}: {path} overrides the dashboard host; leave it to KubeRay")
    if kind == "RayCluster" and "authOptions" not in (doc.get("spec") or {}):
        problems.append(f"{where}: spec.authOptions missing (token authentication)")
    cluster = (doc.get("spec") or {}).get("rayClusterSpec") if kind == "RayJob" else None
    if cluster is not None and "authOptions" not in cluster:
        problems.append(f"{where}: spec.rayClusterSpec.authOptions missing")
    return problems


def _port_in(rule: Doc, port: int) -> bool:
    if str(rule.get("IpProtocol")) == "-1":
        return True
    lo, hi = rule.get("FromPort", -1), rule.get("ToPort", -1)
    return lo == -1 or (lo <= port <= hi)


def launcher_exposure_problems(config: Doc, where: str = "") -> list[str]:
    """Security-group rules or start commands of a launcher config that expose Ray or disable auth."""
    problems = []
    sg = (config.get("provider") or {}).get("security_group") or {}
    for i, rule in enumerate(sg.get("IpPermissions") or []):
        ranges = [r.get("CidrIp") for r in rule.get("IpRanges") or []]
        ranges += [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges") or []]
        for cidr in filter(None, ranges):
            net = ipaddress.ip_network(cidr, strict=False)
            scope = "the internet" if net.prefixlen == 0 else cidr
            for port in RAY_PORTS:
                if _port_in(rule, port) and (net.prefixlen == 0 or not net.is_private):
                    problems.append(f"{where}: IpPermissions[{i}] opens port {port} to {scope}")
    for path, node in _walk(config):
        if isinstance(node, str) and re.search(r"RAY_AUTH_MODE=(?!token\b)", node):
            problems.append(f"{where}: {path} sets RAY_AUTH_MODE to something other than token")
    starts = " ".join(config.get("head_start_ray_commands") or [])
    starts += " " + " ".join(config.get("worker_start_ray_commands") or [])
    if "ray start" in starts and "RAY_AUTH_MODE=token" not in starts:
        problems.append(f"{where}: ray start commands do not set RAY_AUTH_MODE=token")
    return problems


# ------------------------------------------------------------------------------ credentials

_SECRET_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}\b")),
    ("private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b")),
    ("Slack token", re.compile(r"\bxox[abpors]-[A-Za-z0-9-]{10,}")),
    ("Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("JSON web token", re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.")),
    ("GCP service account key", re.compile(r'"type"\s*:\s*"service_account"')),
]
# key = value / key: value, where key names a secret and value is a literal: not a reference
# (${VAR}, $(command), {{template}}), not a placeholder (<...>), not empty.
_SECRET_ASSIGNMENT = re.compile(
    r"""(?ix)
    (?<![a-z0-9])(secret_?access_?key|session_?token|access_?key_?id
       |auth_?token|token|password|passwd|api_?key|client_?secret|bearer)(?![a-z0-9])
    ["']?\s*[:=]\s*["']?
    (?!\$|\{\{|<|valueFrom)
    (?P<value>[^\s"'#,}]{8,})
    """
)


def credential_findings(text: str, where: str = "") -> list[str]:
    """Literal credentials in a text file (patterns of cloud keys, tokens, key = value)."""
    findings = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for name, pattern in _SECRET_PATTERNS:
            if pattern.search(line):
                findings.append(f"{where}:{lineno}: {name}")
        match = _SECRET_ASSIGNMENT.search(line)
        if match:
            findings.append(f"{where}:{lineno}: literal value for {match.group(1)}")
    return findings


def manifest_secret_findings(doc: Doc, where: str = "") -> list[str]:
    """Secrets embedded in Kubernetes objects: Secret data, or literal env values for keys."""
    where = where or str(doc.get("kind"))
    findings = []
    if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
        findings.append(f"{where}: Secret with literal data; create it with kubectl instead")
    secret_name = re.compile(r"(?i)(SECRET|TOKEN|PASSWORD|ACCESS_KEY|API_KEY|CREDENTIAL)")
    for path, node in _walk(doc):
        if (isinstance(node, dict) and "name" in node and "value" in node
                and secret_name.search(str(node["name"])) and node["value"] not in ("", None)):
            findings.append(f"{where}: {path} sets {node['name']} to a literal value")
    return findings


# ------------------------------------------------------------------------------------ main


def check_file(path: Path, crd_schemas: dict[tuple[str, str], Any] | None) -> list[str]:
    """Every applicable check on one deployment file."""
    where = str(path)
    problems = credential_findings(path.read_text(), where)
    if path.suffix not in {".yaml", ".yml"}:
        return problems
    for i, doc in enumerate(load_documents(path)):
        loc = f"{where}[{i}] {doc.get('kind', 'launcher config')}"
        if is_launcher_config(doc):
            problems += launcher_errors(doc, loc) + launcher_exposure_problems(doc, loc)
            continue
        if crd_schemas is not None:
            problems += crd_errors(doc, crd_schemas, loc)
        problems += core_errors(doc, loc) + ray_start_param_errors(doc, loc)
        problems += exposure_problems(doc, loc) + manifest_secret_findings(doc, loc)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="files to check (default: cluster/)")
    parser.add_argument("--crd-dir", type=Path, default=DEFAULT_CRD_DIR,
                        help="folder with KubeRay's ray.io_*.yaml[.gz] CRDs")
    args = parser.parse_args(argv)
    files = args.files or [p for p in sorted(CLUSTER_DIR.rglob("*")) if p.is_file()
                           and "__pycache__" not in p.parts]
    try:
        schemas = load_crd_schemas(args.crd_dir)
    except FileNotFoundError as e:
        print(f"warning: {e}; KubeRay objects are not checked against their CRDs", file=sys.stderr)
        schemas = None
    problems = [p for f in files for p in check_file(f, schemas)]
    for p in problems:
        print(p)
    print(f"{len(files)} files checked, {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
