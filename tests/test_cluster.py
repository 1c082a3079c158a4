"""The cluster configs in cluster/, checked offline with the tools that will read them.

- cluster/aws.yaml goes through Ray's own `prepare_config` + `validate_config` (what `ray up` runs).
- The KubeRay manifests go through the `v1` openAPIV3Schema of KubeRay's CRDs (kept in tests/data/kuberay
  as gzip-compressed JSON; regenerate.py there rebuilds them from KubeRay's CRD YAMLs), read the way the
  API server reads it, then through Ray's own RayCluster -> autoscaler translation.
- Sweeps are placed by Ray's autoscaler (v2, the default for `ray up` and set in the manifests) on the
  node types of each config, so "fits the cluster" means what the autoscaler would actually launch.

No Ray instance is started.
"""

import copy
import gzip
import json
import re
import shlex
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
CRD_SCHEMAS = ROOT / "tests" / "data" / "kuberay"
AWS = CLUSTER / "aws.yaml"
RAYCLUSTER = CLUSTER / "kuberay" / "raycluster.yaml"
RAYJOB = CLUSTER / "kuberay" / "rayjob.yaml"
RAYSERVICE = CLUSTER / "kuberay" / "rayservice.yaml"  # no RayService CRD is vendored: its parts are checked


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# ---------------------------------------------------------------------------------------------
# cluster launcher (AWS)


def prepared_aws(cfg: dict) -> dict:
    """What `ray up` does before launching anything: fill Ray's AWS defaults, then validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


def gpu_types(node_types: dict) -> dict:
    return {name: t for name, t in node_types.items() if t["resources"].get("GPU", 0) > 0}


def test_aws_config_passes_rays_validation():
    prepared = prepared_aws(load(AWS))
    assert prepared["provider"]["type"] == "aws"
    assert len(gpu_types(prepared["available_node_types"])) >= 2  # a 1-GPU and a multi-GPU shape


def test_aws_validation_rejects_a_broken_copy():
    from jsonschema import ValidationError

    cfg = load(AWS)
    cfg["available_node_types"]["gpu_1x"]["resources"]["GPU"] = 0.5  # node resources are integers
    with pytest.raises(ValidationError):
        prepared_aws(cfg)
    cfg = load(AWS)
    cfg["available_node_types"]["gpu_1x"]["min_wokers"] = 0  # unknown key
    with pytest.raises(ValidationError):
        prepared_aws(cfg)


def test_aws_gpu_workers_scale_from_zero():
    prepared = prepared_aws(load(AWS))
    for name, node_type in gpu_types(prepared["available_node_types"]).items():
        assert node_type["min_workers"] == 0, name
        assert node_type["max_workers"] >= 1, name


def test_aws_head_offers_no_cpu_or_gpu_for_trials():
    prepared = prepared_aws(load(AWS))
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert head["resources"].get("GPU", 0) == 0


def test_aws_every_node_starts_ray_with_token_auth():
    cfg = load(AWS)
    assert "~/.ray/auth_token" in cfg["file_mounts"]
    start = cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in cmd for cmd in start if "ray start" in cmd)


# ---------------------------------------------------------------------------------------------
# KubeRay manifests against the CRD schemas


def _as_the_api_server_reads_it(node):
    """Two rules the API server applies that plain JSON Schema does not: a field the schema does not
    declare is an error (kubectl's default strict field validation), and x-kubernetes-int-or-string
    means an integer or a string. CEL rules (x-kubernetes-validations) cannot be evaluated here, so a
    manifest that sets a field carrying them fails rather than passing unchecked."""
    if isinstance(node, list):
        return [_as_the_api_server_reads_it(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _as_the_api_server_reads_it(value) for key, value in node.items()}
    if "properties" in node and "additionalProperties" not in node:
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return node


def _cel_rules_unchecked(validator, rules, instance, schema):
    yield jsonschema.ValidationError(f"sets a field with CEL rules, not checked offline: {rules}")


CRDValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"x-kubernetes-validations": _cel_rules_unchecked}
)


def crd_validator(schema_file: str) -> jsonschema.protocols.Validator:
    schema = json.loads(gzip.decompress((CRD_SCHEMAS / schema_file).read_bytes()))
    return CRDValidator(_as_the_api_server_reads_it(schema))


@pytest.fixture(scope="module")
def raycluster_schema():
    return crd_validator("ray.io_rayclusters.v1.json.gz")


@pytest.fixture(scope="module")
def rayjob_schema():
    return crd_validator("ray.io_rayjobs.v1.json.gz")


def test_regenerate_keeps_the_v1_schema_exactly(tmp_path):
    """The vendored files come from regenerate.py: it must keep v1's schema whole and drop the rest."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("regenerate", CRD_SCHEMAS / "regenerate.py")
    regenerate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(regenerate)
    v1 = {"type": "object", "properties": {"spec": {"type": "object", "x-kubernetes-int-or-string": True}}}
    crd = {
        "spec": {
            "versions": [
                {"name": "v1alpha1", "schema": {"openAPIV3Schema": {"type": "string"}}},
                {"name": "v1", "schema": {"openAPIV3Schema": v1}},
            ]
        }
    }
    crd_yaml = tmp_path / "ray.io_things.yaml"
    crd_yaml.write_text(yaml.safe_dump(crd))
    regenerate.main([str(crd_yaml), "--out", str(tmp_path)])
    written = (tmp_path / "ray.io_things.v1.json.gz").read_bytes()
    assert json.loads(gzip.decompress(written)) == v1
    assert regenerate.compact_schema(crd_yaml) == written  # same input, same bytes: diffs stay honest


def schema_errors(validator, manifest: dict) -> list[str]:
    return sorted(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest))


def cluster_spec(manifest: dict) -> dict:
    """The RayCluster spec of a RayCluster, or the one a RayJob creates."""
    return manifest["spec"]["rayClusterSpec"] if manifest["kind"] == "RayJob" else manifest["spec"]


def test_raycluster_matches_the_crd(raycluster_schema):
    manifest = load(RAYCLUSTER)
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayCluster")
    assert schema_errors(raycluster_schema, manifest) == []


def test_rayjob_matches_the_crd(rayjob_schema):
    manifest = load(RAYJOB)
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayJob")
    assert schema_errors(rayjob_schema, manifest) == []


@pytest.mark.parametrize(
    "break_it, expected",
    [
        (lambda spec: spec["workerGroupSpecs"][0].update(minReplicas="zero"), "minReplicas"),
        (lambda spec: spec.pop("headGroupSpec"), "headGroupSpec"),
        (lambda spec: spec["workerGroupSpecs"][0].update(minReplica=0), "minReplica"),  # misspelled
        (lambda spec: spec["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}), "num-cpus"),  # not a string
        (
            lambda spec: spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"].update(
                {"nvidia.com/gpu": "one"}
            ),
            "nvidia.com/gpu",
        ),
        (lambda spec: spec.update(managedBy="someone"), "CEL"),
    ],
    ids=["minReplicas-string", "no-headGroupSpec", "misspelled-field", "num-cpus-int", "gpu-not-a-quantity", "cel"],
)
def test_the_crd_check_rejects_broken_copies(raycluster_schema, rayjob_schema, break_it, expected):
    for path, validator in ((RAYCLUSTER, raycluster_schema), (RAYJOB, rayjob_schema)):
        manifest = load(path)
        break_it(cluster_spec(manifest))
        errors = schema_errors(validator, manifest)
        assert errors and any(expected in e for e in errors), (path.name, errors)


def test_quantities_may_be_integers_or_strings(raycluster_schema):
    manifest = load(RAYCLUSTER)
    limits = cluster_spec(manifest)["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]
    for gpus in (1, "1"):
        limits["nvidia.com/gpu"] = gpus
        assert schema_errors(raycluster_schema, manifest) == []


# ---------------------------------------------------------------------------------------------
# KubeRay manifests as Ray's autoscaler reads them


def kuberay_autoscaling_config(manifest: dict) -> dict:
    """Ray's own translation of a RayCluster (or a RayJob's cluster) into autoscaler node types."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    ray_cr = {"metadata": {"name": "raygan", "namespace": "default"}, "spec": copy.deepcopy(cluster_spec(manifest))}
    return _derive_autoscaling_config_from_ray_cr(ray_cr)


@pytest.mark.parametrize("path", [RAYCLUSTER, RAYJOB], ids=lambda p: p.name)
def test_kuberay_head_offers_no_cpu_and_gpu_groups_scale_from_zero(path):
    spec = cluster_spec(load(path))
    assert spec["enableInTreeAutoscaling"] is True
    node_types = kuberay_autoscaling_config(load(path))["available_node_types"]
    assert node_types["headgroup"]["resources"]["CPU"] == 0
    assert node_types["headgroup"]["resources"].get("GPU", 0) == 0
    gpu_groups = gpu_types(node_types)
    assert len(gpu_groups) >= 2
    assert all(group["min_workers"] == 0 for group in gpu_groups.values())
    assert all(group["replicas"] == 0 for group in spec["workerGroupSpecs"])  # nothing runs until asked


def test_rayjob_runs_a_raygan_sweep_into_s3(capsys):
    from raygan.cli import main

    entrypoint = shlex.split(load(RAYJOB)["spec"]["entrypoint"])
    assert entrypoint[:3] == ["python", "-m", "raygan.tune"]
    config, *options = entrypoint[3:]
    assert main(["tune", str(ROOT / config), *options, "--dry-run"]) == 0  # raygan's own parser and checks
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["storage"]["path"].startswith("s3://")
    assert resolved["scaling"]["use_gpu"] is True


def runtime_env(path: Path) -> dict:
    """The runtime_env that brings raygan: the RayJob's, or the RayService's application's."""
    spec = load(path)["spec"]
    if path == RAYJOB:
        return yaml.safe_load(spec["runtimeEnvYAML"])
    return yaml.safe_load(spec["serveConfigV2"])["applications"][0]["runtime_env"]


@pytest.mark.parametrize("path", [RAYJOB, RAYSERVICE], ids=lambda p: p.name)
def test_runtime_env_brings_every_dependency(path):
    """Ray's image has ray; the pip list must bring the rest of pyproject.toml's dependencies."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    def name(requirement: str) -> str:
        return re.split(r"[\s\[<>=!~;@]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    needed = {name(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    env = runtime_env(path)
    assert needed - {"ray"} <= {name(r) for r in env["pip"]}
    assert "working_dir" in env  # raygan's code (and tune_configs/ for the RayJob's entrypoint)


# ---------------------------------------------------------------------------------------------
# the RayService: KubeRay's RayService CRD is not vendored, so its two parts are checked on their own


def test_rayservice_cluster_matches_the_raycluster_crd(raycluster_schema):
    manifest = load(RAYSERVICE)
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    assert set(manifest["spec"]) == {"serveConfigV2", "rayClusterConfig"}
    as_cluster = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "raygan"}}
    assert schema_errors(raycluster_schema, {**as_cluster, "spec": manifest["spec"]["rayClusterConfig"]}) == []
    broken = copy.deepcopy(manifest["spec"]["rayClusterConfig"])
    broken["workerGroupSpecs"][0]["minReplica"] = 1  # misspelled: the check bites
    assert any("minReplica" in e for e in schema_errors(raycluster_schema, {**as_cluster, "spec": broken}))


def test_rayservice_serve_config_is_valid_and_builds_raygans_app(tmp_path):
    """serveConfigV2 through Ray Serve's own schema; its import path and args through raygan, with a local
    checkpoint in place of the S3 one."""
    import importlib

    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema
    from test_serve import tiny_checkpoint

    from raygan.serve.app import BUILD_ARGS, GeneratorServer

    config = ServeDeploySchema.model_validate(yaml.safe_load(load(RAYSERVICE)["spec"]["serveConfigV2"]))
    (app,) = config.applications
    module, _, attribute = app.import_path.partition(":")
    build = getattr(importlib.import_module(module), attribute)
    assert set(app.args) <= set(BUILD_ARGS) and app.args["checkpoint"].startswith("s3://")
    assert [d.name for d in app.deployments] == [GeneratorServer.name]
    assert isinstance(build({**app.args, "checkpoint": tiny_checkpoint(tmp_path, [])}), Application)
    with pytest.raises(ValueError, match="checkpoint"):
        build({"checkpoint": "s3://b/x", "replica": 2})  # misspelled: named, not ignored


# ---------------------------------------------------------------------------------------------
# no credentials anywhere

CREDENTIAL_PATTERNS = [
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    # a secret-looking key followed by a literal value (not "...", not "$VAR", not a path)
    re.compile(
        r"(?i)(secret|password|session_token|auth_token|access_key|tracking_token|api_key)[\w.-]*\W{1,4}[A-Za-z0-9/+=]{16,}"
    ),
]


def credentials_in(text: str) -> list[str]:
    return [m.group(0) for pattern in CREDENTIAL_PATTERNS for m in pattern.finditer(text)]


def literal_secret_env(manifest) -> list[str]:
    """Container env entries named like a secret that carry a value instead of a secretKeyRef."""
    found = []
    if isinstance(manifest, dict):
        if (
            re.search(r"(?i)secret|password|token|access_key|api_key", str(manifest.get("name", "")))
            and "value" in manifest
        ):
            found.append(manifest["name"])
        for value in manifest.values():
            found += literal_secret_env(value)
    elif isinstance(manifest, list):
        for item in manifest:
            found += literal_secret_env(item)
    return found


@pytest.mark.parametrize("path", sorted(p for p in CLUSTER.rglob("*") if p.is_file()), ids=lambda p: p.name)
def test_no_credentials_in_cluster_files(path):
    assert credentials_in(path.read_text()) == []
    if path.suffix == ".yaml":
        assert literal_secret_env(load(path)) == []
        assert "aws_credentials" not in load(path).get("provider", {})  # the launcher's inline-keys option


def test_the_credential_check_bites():
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS's documentation example
    assert credentials_in(f"AWS_SECRET_ACCESS_KEY: {secret}")
    assert credentials_in("aws_access_key_id = AKIAIOSFODNN7EXAMPLE")
    env = yaml.safe_load(f"env:\n  - name: AWS_SECRET_ACCESS_KEY\n    value: {secret}\n")
    assert literal_secret_env(env) == ["AWS_SECRET_ACCESS_KEY"]
    assert not credentials_in("--from-literal=AWS_SECRET_ACCESS_KEY=...")  # the placeholders in comments
    assert credentials_in("export MLFLOW_TRACKING_TOKEN=dapi0123456789abcdef0123456789ab")  # experiment trackers
    assert credentials_in("WANDB_API_KEY: 0123456789abcdef0123456789abcdef01234567")
    assert literal_secret_env(yaml.safe_load("- name: WANDB_API_KEY\n  value: x\n")) == ["WANDB_API_KEY"]


# ---------------------------------------------------------------------------------------------
# sweeps placed on the node types by Ray's autoscaler


def aws_cluster():
    """aws.yaml as the autoscaler holds it (node types, the global max_workers)."""
    from ray.autoscaler.v2.instance_manager.config import AutoscalingConfig

    return AutoscalingConfig(load(AWS), skip_content_hash=True)


def kuberay_cluster(path: Path):
    from ray.autoscaler.v2.instance_manager.config import AutoscalingConfig

    return AutoscalingConfig(kuberay_autoscaling_config(load(path)), skip_content_hash=True)


def worker_bundle(scaling: dict) -> dict:
    """One Train worker's resource request, exactly as a trial makes it."""
    from raygan.config import ScalingConfig
    from raygan.train.session import worker_resources

    return worker_resources(ScalingConfig(**scaling))


def place(cluster, trials: int, scaling: dict, without: tuple = ()) -> tuple[dict, int]:
    """Nodes Ray's autoscaler launches for `trials` concurrent trials (each one placement group of
    num_workers bundles) on an empty cluster, and how many trials it cannot place at all."""
    from ray.autoscaler.v2.scheduler import ResourceDemandScheduler, SchedulingRequest
    from ray.autoscaler.v2.utils import ResourceRequestUtil
    from ray.core.generated.autoscaler_pb2 import GangResourceRequest

    trial = GangResourceRequest(
        requests=[ResourceRequestUtil.make(worker_bundle(scaling)) for _ in range(scaling["num_workers"])]
    )
    node_types = {name: t for name, t in cluster.get_node_type_configs().items() if name not in without}
    request = SchedulingRequest(
        disable_launch_config_check=True,
        node_type_configs=node_types,
        max_num_nodes=cluster.get_max_num_worker_nodes(),  # the head is not modelled, so workers only
        gang_resource_requests=[copy.deepcopy(trial) for _ in range(trials)],
    )
    reply = ResourceDemandScheduler().schedule(request)
    launched = Counter()
    for launch in reply.to_launch:
        launched[launch.instance_type] += launch.count
    return dict(launched), len(reply.infeasible_gang_resource_requests)


def scaling(num_workers=1, gpus_per_worker=1, cpus_per_worker=1, use_gpu=True) -> dict:
    return dict(
        num_workers=num_workers, gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker, use_gpu=use_gpu
    )


@pytest.mark.parametrize(
    "path, one_gpu, four_gpus",
    [(AWS, "gpu_1x", "gpu_4x"), (RAYCLUSTER, "gpu-1x", "gpu-4x")],
    ids=["aws.yaml", "raycluster.yaml"],
)
def test_worked_example_of_the_readme(path, one_gpu, four_gpus):
    """cluster/README.md: 16 trials x 2 GPUs (2 workers x 1 GPU), max_concurrent 4, and other shapes."""
    cluster = aws_cluster() if path == AWS else kuberay_cluster(path)
    two_gpus = scaling(num_workers=2)
    assert place(cluster, 4, two_gpus) == ({one_gpu: 8}, 0)  # each worker fills a 1-GPU node
    assert place(cluster, 4, two_gpus, without=(one_gpu,)) == ({four_gpus: 2}, 0)  # two trials per 4-GPU node
    assert place(cluster, 4, scaling(num_workers=4)) == ({four_gpus: 4}, 0)  # a 4-GPU trial takes a whole node
    assert place(cluster, 4, scaling(num_workers=1, gpus_per_worker=0.5)) == ({one_gpu: 2}, 0)  # 2 trials per GPU
    assert place(cluster, 4, scaling(num_workers=2, cpus_per_worker=8)) == ({four_gpus: 2}, 0)  # 8 CPUs: 4x only
    # Without scaling.use_gpu a trial still runs, on a GPU node's CPUs with its GPU idle (the head has no CPU).
    assert place(cluster, 1, scaling(num_workers=2, use_gpu=False)) == ({one_gpu: 1}, 0)


def test_aws_max_workers_caps_a_wide_sweep():
    """All 16 trials of the example at once want 32 GPUs; max_workers 16 fills with 1-GPU nodes: 8 run."""
    assert place(aws_cluster(), 16, scaling(num_workers=2)) == ({"gpu_1x": 16}, 8)


def test_trials_no_node_can_hold_are_refused():
    aws = aws_cluster()
    assert place(aws, 1, scaling(num_workers=1, gpus_per_worker=8)) == ({}, 1)  # no node has 8 GPUs
    assert place(aws, 1, scaling(num_workers=1, cpus_per_worker=64)) == ({}, 1)  # nor 64 CPUs


def test_custom_resources_per_worker_join_every_bundle():
    """scaling.resources_per_worker pins a trial's workers to the node types that offer those resources
    (tests/test_cluster_live.py runs it on a live autoscaler)."""
    trainer = {**scaling(), "resources_per_worker": {"trainer": 1}}
    assert worker_bundle(trainer) == {"CPU": 1, "GPU": 1, "trainer": 1}
    assert worker_bundle({**trainer, "use_gpu": False}) == {"CPU": 1, "trainer": 1}
    assert place(aws_cluster(), 1, trainer) == ({}, 1)  # no node type of aws.yaml offers `trainer`


@pytest.mark.parametrize(
    "resources, key", [("{GPU: 2}", "GPU"), ("{trainer: 0}", "trainer"), ("{trainer: x}", "trainer")]
)
def test_bad_resources_per_worker_name_the_resource(resources, key):
    from raygan.config import build_config
    from raygan.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"^scaling\.resources_per_worker\.{key}: "):
        build_config({}, [f"scaling.resources_per_worker={resources}"])


def cluster_sweeps() -> list[tuple[str, dict, int]]:
    """Every shipped sweep as the RayJob runs it (scaling.use_gpu=true), plus the RayJob's own sweep."""
    from raygan.config import load_config

    sweeps = []
    for path in sorted((ROOT / "tune_configs").glob("*.yaml")):
        cfg = load_config(path, ["scaling.use_gpu=true"]).to_dict()
        sweeps.append((path.name, cfg["scaling"], cfg["tune"]["max_concurrent"]))
    argv = shlex.split(load(RAYJOB)["spec"]["entrypoint"])
    overrides = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--set"]
    cfg = load_config(ROOT / argv[3], overrides).to_dict()
    sweeps.append(("rayjob.yaml", cfg["scaling"], cfg["tune"]["max_concurrent"]))
    return sweeps


@pytest.mark.parametrize("path", [AWS, RAYCLUSTER, RAYJOB], ids=lambda p: p.name)
def test_every_sweep_runs_max_concurrent_trials_at_once(path):
    cluster = aws_cluster() if path == AWS else kuberay_cluster(path)
    gpu_nodes = {name for name, t in cluster.get_node_type_configs().items() if t.resources.get("GPU", 0) > 0}
    for name, sweep_scaling, max_concurrent in cluster_sweeps():
        launched, unplaced = place(cluster, max_concurrent, sweep_scaling)
        assert unplaced == 0, (name, sweep_scaling, max_concurrent)
        assert launched and set(launched) <= gpu_nodes, (name, launched)
