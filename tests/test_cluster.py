"""Deployment files (cluster/): schemas, consistency with the repository, and safety.

- KubeRay objects validate against KubeRay's CRD schemas (../shared/kuberay-crds; skipped when
  absent) and their pod templates against the Kubernetes core schemas (kubernetes-validate);
  a misspelt field fails both.
- The launcher config validates against Ray's launcher schema and has the same worker groups.
- The RayJob's entry point is the repository's jobs/classify_survey.py inside the image, its
  arguments parse with the job's own parser, and it runs locally on a tiny survey.
- The Dockerfile installs what scripts/install.sh installs, on matching Ray and Python.
- Nothing in cluster/ holds a credential or exposes Ray outside the cluster.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
CRD_DIR = REPO.parent / "shared" / "kuberay-crds"
JOB = REPO / "jobs" / "classify_survey.py"
RAYCLUSTER = CLUSTER / "kuberay" / "raycluster.yaml"
RAYJOB = CLUSTER / "kuberay" / "rayjob.yaml"
SERVICEACCOUNT = CLUSTER / "kuberay" / "serviceaccount.yaml"
AWS = CLUSTER / "aws" / "galscale-cluster.yaml"
KUBERAY_FILES = [RAYCLUSTER, RAYJOB]
# The job's command-line interface as agreed with the survey job (issue 7).
JOB_OPTIONS = {"--survey", "--out", "--run-id", "--tile-size", "--batch-size", "--device",
               "--stages", "--spectra", "--models", "--num-model-actors", "--storage-endpoint"}
needs_crds = pytest.mark.skipif(not CRD_DIR.is_dir(), reason=f"{CRD_DIR} absent")
needs_job = pytest.mark.skipif(not JOB.exists(), reason="jobs/classify_survey.py does not exist yet")


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


check = _load_module("galscale_cluster_check", CLUSTER / "check.py")


def _one(path: Path) -> dict:
    (doc,) = check.load_documents(path)
    return doc


@pytest.fixture(scope="module")
def crd_schemas():
    if not CRD_DIR.is_dir():
        pytest.skip(f"{CRD_DIR} absent")
    return check.load_crd_schemas(CRD_DIR)


@pytest.fixture(scope="module")
def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


# ------------------------------------------------------------------------ KubeRay schemas


@needs_crds
@pytest.mark.parametrize("path", KUBERAY_FILES, ids=lambda p: p.name)
def test_kuberay_objects_match_crd_schema(path, crd_schemas):
    doc = _one(path)
    assert (doc["apiVersion"], doc["kind"]) in crd_schemas
    assert check.crd_errors(doc, crd_schemas, path.name) == []


@needs_crds
@pytest.mark.parametrize(
    "path, keys, typo",
    [
        (RAYCLUSTER, ["spec", "enableInTreeAutoscaling"], "enableInTreeAutoScaling"),
        (RAYCLUSTER, ["spec", "workerGroupSpecs", 0, "maxReplicas"], "maxReplica"),
        (RAYJOB, ["spec", "shutdownAfterJobFinishes"], "shutdownAfterJobFinished"),
        # a pod-template field inside the CRD (the CRD embeds the core PodTemplateSpec schema)
        (RAYJOB, ["spec", "rayClusterSpec", "headGroupSpec", "template", "spec",
                  "serviceAccountName"], "serviceAcountName"),
    ],
    ids=["cluster-top", "worker-group", "rayjob", "embedded-pod"],
)
def test_crd_validation_rejects_misspelt_field(path, keys, typo, crd_schemas):
    doc = _one(path)
    parent = doc
    for k in keys[:-1]:
        parent = parent[k]
    parent[typo] = parent.pop(keys[-1])
    errors = check.crd_errors(doc, crd_schemas, path.name)
    assert any(typo in e for e in errors), errors


@pytest.mark.parametrize("path", KUBERAY_FILES, ids=lambda p: p.name)
def test_ray_start_params_are_ray_start_options(path):
    doc = _one(path)
    assert check.ray_start_param_errors(doc, path.name) == []
    # free-form in the CRD, so only this check catches a typo there
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    spec["headGroupSpec"]["rayStartParams"]["num-cpu"] = "0"
    assert any("--num-cpu" in e for e in check.ray_start_param_errors(doc, path.name))


@needs_crds
def test_crd_validation_rejects_wrong_type_and_enum(crd_schemas):
    doc = _one(RAYCLUSTER)
    doc["spec"]["workerGroupSpecs"][0]["minReplicas"] = "one"
    doc["spec"]["autoscalerOptions"]["upscalingMode"] = "Fast"
    errors = check.crd_errors(doc, crd_schemas)
    assert any("minReplicas" in e for e in errors) and any("upscalingMode" in e for e in errors)


# ------------------------------------------------------------------ Kubernetes core schemas


@pytest.mark.parametrize("path", KUBERAY_FILES, ids=lambda p: p.name)
def test_pod_templates_match_kubernetes_core_schema(path):
    doc = _one(path)
    templates = list(check.pod_templates(doc))
    assert len(templates) == 3  # head, cpu-workers, gpu-workers
    assert check.core_errors(doc, path.name) == []


def test_serviceaccount_matches_kubernetes_core_schema():
    assert check.core_errors(_one(SERVICEACCOUNT), SERVICEACCOUNT.name) == []


@pytest.mark.parametrize(
    "mutate, typo",
    [
        (lambda t: t["spec"].__setitem__("tolerationz", t["spec"].pop("tolerations")),
         "tolerationz"),
        (lambda t: t["spec"]["containers"][0].__setitem__(
            "resource", t["spec"]["containers"][0].pop("resources")), "resource"),
        (lambda t: t["spec"]["containers"][0]["envFrom"][0]["secretRef"].__setitem__(
            "optinal", True), "optinal"),
    ],
    ids=["pod-spec", "container", "secret-ref"],
)
def test_core_validation_rejects_misspelt_pod_field(mutate, typo):
    doc = copy.deepcopy(_one(RAYCLUSTER))
    gpu = doc["spec"]["workerGroupSpecs"][1]
    mutate(gpu["template"])
    errors = check.core_errors(doc, "raycluster")
    assert any(typo in e and "gpu-workers" in e for e in errors), errors


# ----------------------------------------------------------------------- cluster layout


def _limits(template: dict) -> dict:
    (container,) = template["spec"]["containers"]
    assert container["resources"]["requests"] == container["resources"]["limits"]
    return container["resources"]["limits"]


def test_raycluster_layout(constraints):
    spec = _one(RAYCLUSTER)["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["rayVersion"] == constraints["ray"]
    assert spec["authOptions"] == {"mode": "token", "secretName": "galscale-ray-token"}
    head = spec["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP"
    assert head["rayStartParams"]["num-cpus"] == "0" and head["rayStartParams"]["num-gpus"] == "0"
    assert "nvidia.com/gpu" not in _limits(head["template"])
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu-workers", "gpu-workers"}
    for g in groups.values():
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        assert g["template"]["spec"]["serviceAccountName"] == "galscale-ray"
    assert "nvidia.com/gpu" not in _limits(groups["cpu-workers"]["template"])
    assert groups["cpu-workers"]["rayStartParams"]["num-gpus"] == "0"
    assert int(_limits(groups["gpu-workers"]["template"])["nvidia.com/gpu"]) >= 1
    assert head["template"]["spec"]["serviceAccountName"] == "galscale-ray"
    sa = _one(SERVICEACCOUNT)
    assert sa["metadata"]["name"] == "galscale-ray"
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+",
                        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"])


def test_rayjob_runs_the_same_cluster_and_cleans_up():
    job = _one(RAYJOB)["spec"]
    assert job["rayClusterSpec"] == _one(RAYCLUSTER)["spec"]
    assert job["shutdownAfterJobFinishes"] is True
    assert job["activeDeadlineSeconds"] > 0 and job["ttlSecondsAfterFinished"] > 0
    assert job["backoffLimit"] >= 1
    assert "clusterSelector" not in job


def test_images_are_this_version_of_galscale(pyproject):
    version = pyproject["project"]["version"]
    spec = _one(RAYCLUSTER)["spec"]
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    image = {name: g["template"]["spec"]["containers"][0]["image"] for name, g in groups.items()}
    image["head"] = spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert image["head"].endswith(f"/galscale:{version}-cpu")
    assert image["cpu-workers"] == image["head"]
    assert image["gpu-workers"].endswith(f"/galscale:{version}-gpu")
    aws = _one(AWS)
    assert aws["docker"]["image"] == image["head"]
    assert aws["available_node_types"]["gpu-workers"]["docker"]["worker_image"] == image["gpu-workers"]


# ---------------------------------------------------------------- cluster launcher (AWS)


def test_launcher_config_matches_ray_schema():
    assert check.launcher_errors(_one(AWS), AWS.name) == []


def test_launcher_validation_rejects_misspelt_field():
    config = _one(AWS)
    node = config["available_node_types"]["gpu-workers"]
    node["max_worker"] = node.pop("max_workers")
    errors = check.launcher_errors(config, AWS.name)
    assert any("max_worker" in e for e in errors), errors


def test_launcher_has_the_same_worker_groups_as_kuberay():
    aws = _one(AWS)
    nodes = aws["available_node_types"]
    groups = {g["groupName"]: g for g in _one(RAYCLUSTER)["spec"]["workerGroupSpecs"]}
    assert set(nodes) == {aws["head_node_type"], *groups}
    assert nodes[aws["head_node_type"]]["resources"] == {"CPU": 0, "GPU": 0}
    for name, g in groups.items():
        assert (nodes[name]["min_workers"], nodes[name]["max_workers"]) == (
            g["minReplicas"], g["maxReplicas"])
        limits = _limits(g["template"])
        assert nodes[name]["resources"] == {
            "CPU": int(limits["cpu"]), "GPU": int(limits.get("nvidia.com/gpu", 0))}
    assert aws["max_workers"] == sum(g["maxReplicas"] for g in groups.values())
    assert aws["upscaling_speed"] > 0
    for node in nodes.values():  # S3 through an instance profile, never keys
        assert node["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::")


# ----------------------------------------------------------------- RayJob entry point


def _entrypoint() -> list[str]:
    return shlex.split(_one(RAYJOB)["spec"]["entrypoint"])


def _dockerfile() -> str:
    # join line continuations so that each instruction is one line
    return re.sub(r"\\\n", " ", (CLUSTER / "Dockerfile").read_text())


def _image_workdir() -> str:
    (workdir,) = re.findall(r"^WORKDIR\s+(\S+)", _dockerfile(), re.M)
    return workdir


def test_rayjob_entrypoint_is_the_repository_job_inside_the_image():
    argv = _entrypoint()
    assert argv[0] == "python"
    workdir = _image_workdir()
    assert argv[1] == f"{workdir}/jobs/classify_survey.py"
    copied = re.findall(r"^COPY\s+(?:--\S+\s+)*(.+?)\s+\S+$", _dockerfile(), re.M)
    assert any("jobs/" in c.split() for c in copied), "the image must contain jobs/"
    options = {a for a in argv[2:] if a.startswith("--")}
    assert options <= JOB_OPTIONS, options - JOB_OPTIONS
    assert {"--survey", "--out", "--run-id"} <= options  # --run-id makes a retry resume
    args = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert args["--survey"].startswith("s3://") and args["--out"].startswith("s3://")
    # one model actor per GPU worker: the actors are what makes the autoscaler add GPU workers
    groups = {g["groupName"]: g for g in _one(RAYJOB)["spec"]["rayClusterSpec"]["workerGroupSpecs"]}
    assert int(args["--num-model-actors"]) == groups["gpu-workers"]["maxReplicas"]
    assert args["--device"] == "cuda" and groups["gpu-workers"]["minReplicas"] >= 1


class _Parsed(Exception):
    """Raised by the patched parse_args to stop the job right after parsing its arguments."""


def _parse_with_job(args: list[str], monkeypatch: pytest.MonkeyPatch):
    """Namespace the job's own argparse makes of `args`, without running the job.

    Runs jobs/classify_survey.py as __main__ with `parse_args` patched to stop right after the
    first full parse; works whatever the job calls its parser.
    """
    import argparse
    import runpy

    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    monkeypatch.setattr(sys, "argv", [str(JOB), *args])
    monkeypatch.chdir(REPO)
    try:
        runpy.run_path(str(JOB), run_name="__main__")
    except _Parsed as parsed:
        return parsed.args[0]
    raise AssertionError("jobs/classify_survey.py finished without parsing its arguments")


@needs_job
def test_rayjob_arguments_parse_with_the_job_parser(monkeypatch):
    argv = _entrypoint()
    ns = _parse_with_job(argv[2:], monkeypatch)
    args = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert ns.survey == args["--survey"] and ns.out == args["--out"]
    assert ns.run_id == args["--run-id"]
    from galscale.cli import job_config_from_args  # what the job does next: checks the stages

    assert job_config_from_args(ns).stages == tuple(args["--stages"].split(","))
    for documented in _documented_job_commands():  # docs/deployment.md's commands too
        assert _parse_with_job(documented, monkeypatch).run_id
    # the same route rejects an option the job does not have
    with pytest.raises(SystemExit) as exit_info:
        _parse_with_job([*argv[2:], "--tile-sise", "8"], monkeypatch)
    assert exit_info.value.code == 2


@pytest.fixture(scope="module")
def tiny_survey(tmp_path_factory: pytest.TempPathFactory):
    """(url, truth) of a 192 x 192 px, 7-band survey with 5 Gaussian sources (one tile)."""
    from galscale.survey.synthetic import make_gaussian_survey

    url = str(tmp_path_factory.mktemp("tiny") / "tiny.zarr")
    return url, make_gaussian_survey(url, shape=(192, 192), n_sources=5, seed=3, chunk=128)


@needs_job
@pytest.mark.slow
def test_rayjob_entrypoint_runs_locally_on_a_tiny_survey(tiny_survey, tmp_path):
    """The manifest's exact command, with the storage URLs made local.

    The two hardware options are fitted to this machine: --device cpu when there is no GPU and
    --num-model-actors 1 (the manifest asks for one actor per GPU worker). Runs on the local Ray
    instance the job starts when RAY_ADDRESS is not set. Uses the weights shipped in galscale,
    as the image does.
    """
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from galscale import catalog
    from galscale.registry import shipped_names

    missing = {"denoiser", "morphology", "redshift"} - set(shipped_names())
    if missing:
        pytest.fail(f"galscale ships no weights for {sorted(missing)}; the RayJob needs them")
    survey_url, truth = tiny_survey
    argv = _entrypoint()
    argv[1] = str(JOB)
    out = tmp_path / "out"
    for flag, value in {"--survey": survey_url, "--out": str(out)}.items():
        argv[argv.index(flag) + 1] = value
    if not torch.cuda.is_available():
        argv[argv.index("--device") + 1] = "cpu"
    argv[argv.index("--num-model-actors") + 1] = "1"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    run_id = argv[argv.index("--run-id") + 1]
    path = out / run_id / catalog.CATALOG_FILE
    assert str(path) in proc.stdout  # the job says where the catalog is
    table = pq.read_table(path)
    ids = table["source_id"].to_pylist()
    assert len(ids) == len(set(ids)) > 0
    assert catalog.read_provenance(str(path))["run_id"] == run_id
    # every simulated source well above the noise (1 nJy/px) is in the catalog, within 1.5 px
    # of where it was put, with model outputs
    x, y = table["x"].to_numpy(), table["y"].to_numpy()
    bright = truth["flux_F277W"] > 50.0
    assert bright.sum() >= 3
    for tx, ty in zip(truth["x"][bright], truth["y"][bright], strict=True):
        assert np.min(np.hypot(x - tx, y - ty)) < 1.5, (tx, ty)
    assert {"p_disk", "p_low_z", "p_high_z", "p_brown_dwarf"} <= set(table.column_names)


# ------------------------------------------------------------- image vs README install


def _install_sh() -> str:
    return (REPO / "scripts" / "install.sh").read_text()


def _pip_install(text: str) -> tuple[str, str]:
    """(constraints file, extras) of the `pip install ... -c FILE ... .[EXTRAS]` command."""
    (command,) = [m for m in re.findall(r"pip install [^\n&|;]*", text) if re.search(r"-c\s", m)]
    (constraints_file,) = re.findall(r"-c\s+(\S+)", command)
    (extras,) = re.findall(r"""["']?\.\[([^\]]*)\]["']?""", command)
    return constraints_file, extras


def _check_command(text: str) -> str:
    (cmd,) = re.findall(r'python -c "(import galscale[^"]*)"', text)
    return cmd


def test_dockerfile_installs_what_the_readme_install_installs(constraints, pyproject):
    docker = _dockerfile()
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", docker, re.M))
    (base,) = re.findall(r"^FROM\s+(\S+)", docker, re.M)
    variants = dict(re.findall(r"(\w+)\)\s+extras=([\w,]+);", docker))
    assert set(variants) == {"cpu", "gpu"} and args["VARIANT"] in variants

    # base image: official Ray image with the pinned Ray and a Python allowed by pyproject
    for variant in variants:
        values = {**args, "VARIANT": variant}
        image = re.sub(r"\$\{(\w+)\}", lambda m, v=values: v[m.group(1)], base)
        m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-" + variant, image)
        assert m, image
        assert m.group(1) == constraints["ray"]
        python = f"{m.group(2)}.{m.group(3)}"
        requires = SpecifierSet(pyproject["project"]["requires-python"])
        assert requires.contains(f"{python}.0") and f"{sys.version_info[0]}.{sys.version_info[1]}" == python

    # the same pip command: constraints file and extras (plus `gpu` in the GPU variant only)
    install_constraints, install_extras = _pip_install(_install_sh())
    docker_constraints, docker_extras = _pip_install(docker)
    assert docker_constraints == install_constraints == "requirements/constraints.txt"
    assert docker_extras == "$extras"
    assert set(variants["cpu"].split(",")) == set(install_extras.split(","))
    assert set(variants["gpu"].split(",")) == set(install_extras.split(",")) | {"gpu"}
    assert "gpu" in pyproject["project"]["optional-dependencies"]
    assert any(d.startswith("cuml") for d in pyproject["project"]["optional-dependencies"]["gpu"])
    # the same system package and the same post-install check
    assert "gfortran" in _install_sh() and re.search(r"apt-get install[^\n]*gfortran", docker)
    assert _check_command(docker) == _check_command(_install_sh())
    # everything the package build reads is in the image
    for needed in ("pyproject.toml", "README.md", "requirements/", "galscale/", "jobs/"):
        assert re.search(rf"^COPY\s.*\s{re.escape(needed)}\s", docker, re.M), needed


def test_dockerfile_parser_sees_a_changed_install():
    """The comparison above must notice when the image installs something else."""
    changed = _dockerfile().replace("-c requirements/constraints.txt", "-c other.txt")
    assert _pip_install(changed)[0] != _pip_install(_install_sh())[0]


# --------------------------------------------------------------- credentials and exposure


def _cluster_files() -> list[Path]:
    return [p for p in sorted(CLUSTER.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]


def test_no_credentials_in_cluster_files():
    findings = []
    for path in _cluster_files():
        findings += check.credential_findings(path.read_text(), str(path.relative_to(REPO)))
        if path.suffix in {".yaml", ".yml"}:
            for doc in check.load_documents(path):
                findings += check.manifest_secret_findings(doc, path.name)
    assert findings == []


@pytest.mark.parametrize(
    "text",
    [
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
        "aws_secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "export RAY_AUTH_TOKEN=3f9a8c7d6e5b4a3928170f",
        "-----BEGIN RSA PRIVATE KEY-----",
    ],
)
def test_credential_scan_catches_planted_secrets(text):
    assert check.credential_findings(f"a: 1\n{text}\n", "planted")


def test_manifest_scan_catches_literal_secret_env():
    doc = _one(RAYCLUSTER)
    doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "AWS_SECRET_ACCESS_KEY", "value": "not-a-reference"}]
    assert check.manifest_secret_findings(doc)
    assert check.manifest_secret_findings(
        {"apiVersion": "v1", "kind": "Secret", "stringData": {"auth_token": "x"}})


def test_nothing_exposes_ray_outside_the_cluster():
    problems = []
    for path in [RAYCLUSTER, RAYJOB, SERVICEACCOUNT]:
        for doc in check.load_documents(path):
            problems += check.exposure_problems(doc, path.name)
    problems += check.launcher_exposure_problems(_one(AWS), AWS.name)
    assert problems == []
    kinds = {d.get("kind") for p in check.deployment_files() for d in check.load_documents(p)}
    assert not kinds & {"Service", "Ingress", "Route", "Gateway", "HTTPRoute"}


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s["headGroupSpec"].__setitem__("serviceType", "LoadBalancer"),
        lambda s: s["headGroupSpec"].__setitem__("serviceType", "NodePort"),
        lambda s: s["headGroupSpec"].__setitem__("enableIngress", True),
        lambda s: s["authOptions"].__setitem__("mode", "disabled"),
        lambda s: s.pop("authOptions"),
        lambda s: s["headGroupSpec"]["template"]["spec"]["containers"][0].__setitem__(
            "env", [{"name": "RAY_AUTH_MODE", "value": "disabled"}]),
        lambda s: s["workerGroupSpecs"][0]["template"]["spec"]["containers"][0].__setitem__(
            "ports", [{"containerPort": 8265, "hostPort": 8265}]),
    ],
    ids=["loadbalancer", "nodeport", "ingress", "auth-off", "auth-missing", "auth-env-off",
         "hostport"],
)
def test_exposure_check_catches_public_dashboard(mutate):
    doc = _one(RAYJOB)
    mutate(doc["spec"]["rayClusterSpec"])
    assert check.exposure_problems(doc, "rayjob")


@pytest.mark.parametrize("cidr, port", [("0.0.0.0/0", 8265), ("::/0", 8265), ("0.0.0.0/0", 6379)])
def test_launcher_exposure_check_catches_open_dashboard(cidr, port):
    config = _one(AWS)
    key = "CidrIpv6" if ":" in cidr else "CidrIp"
    ranges = "Ipv6Ranges" if ":" in cidr else "IpRanges"
    config["provider"]["security_group"]["IpPermissions"] = [
        {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, ranges: [{key: cidr}]}]
    assert any(str(port) in p for p in check.launcher_exposure_problems(config, "aws"))


def test_check_command_passes_on_the_repository(capsys):
    assert check.main([str(p) for p in _cluster_files()] + ["--crd-dir", str(CRD_DIR)]) == 0


# ------------------------------------------------------------------------------------ docs


def _documented_job_commands() -> list[list[str]]:
    text = re.sub(r"\\\n\s*", " ", (REPO / "docs" / "deployment.md").read_text())
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [shlex.split(line.split("python jobs/classify_survey.py", 1)[1])
            for block in blocks for line in block.splitlines()
            if "python jobs/classify_survey.py" in line]


def test_deployment_docs_match_the_job_and_the_manifests():
    commands = _documented_job_commands()
    assert len(commands) >= 2  # KubeRay port-forward and AWS launcher
    for args in commands:
        options = {a for a in args if a.startswith("--")}
        assert options <= JOB_OPTIONS, options - JOB_OPTIONS
        assert {"--survey", "--out", "--run-id"} <= options
    docs = (REPO / "docs" / "deployment.md").read_text()
    spec = _one(RAYCLUSTER)["spec"]
    aws = (CLUSTER / "aws" / "galscale-cluster.yaml").read_text()
    (aws_secret,) = set(re.findall(r"SecretId='([^']+)'", aws))
    for name in (spec["authOptions"]["secretName"], "galscale-s3", aws_secret,
                 _one(SERVICEACCOUNT)["metadata"]["name"], _one(RAYJOB)["metadata"]["name"],
                 f"svc/{_one(RAYCLUSTER)['metadata']['name']}-head-svc"):
        assert name in docs, name
    assert "ray job submit --address http://127.0.0.1:8265 --working-dir ." in docs
    if JOB.exists():  # the run folder layout the docs describe is the one the job writes
        from galscale import catalog

        assert f"<out>/<run-id>/{catalog.CATALOG_FILE}" in docs
    assert "kubectl apply -f cluster/kuberay/rayjob.yaml" in docs


def test_check_command_fails_on_an_edited_copy(tmp_path, capsys):
    text = RAYJOB.read_text().replace("maxReplicas: 32", "maxReplica: 32")
    text = text.replace("serviceType: ClusterIP", "serviceType: LoadBalancer")
    assert "maxReplica: 32" in text and "serviceType: LoadBalancer" in text
    bad = tmp_path / "my-rayjob.yaml"
    bad.write_text(text)
    assert check.main([str(bad), "--crd-dir", str(CRD_DIR)]) == 1
    out = capsys.readouterr().out
    assert "LoadBalancer" in out
    assert "maxReplica" in out or not CRD_DIR.is_dir()
