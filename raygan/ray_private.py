"""Every private Ray API that raygan uses, looked up here and nowhere else, each with why it is needed.

    from raygan import ray_private
    ray_private.bootstrap_address()      # the Ray that `ray.init()` would join, or None
    ray_private.PRIVATE_APIS             # what tests/test_ray_private.py resolves against the installed Ray

Private means outside Ray's public API: a `_private` or `_internal` module, a name with a leading
underscore, or an attribute Ray sets on its own objects without documenting it. Any Ray release may
change one; the test names the one that went, and this file is the list to look at when upgrading Ray.
Ray itself is imported only when a function here is called.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import textwrap
from typing import Any


@dataclasses.dataclass(frozen=True)
class PrivateApi:
    """One name raygan takes from Ray outside its public API, and why."""

    module: str
    path: str  # dotted attribute path inside the module: "Class.method", "function", "__file__"
    why: str
    per_instance: bool = False  # an attribute Ray's code assigns to `self`, which the class itself lacks

    @property
    def attribute(self) -> str:
        return self.path.rpartition(".")[2]

    def lookup(self) -> Any:
        """The object; for a per-instance attribute, its class once its source is seen to assign
        `self.<attribute>`. ImportError or AttributeError when the installed Ray no longer has it."""
        found: Any = importlib.import_module(self.module)
        owner = self.path.rpartition(".")[0] if self.per_instance else self.path
        for part in owner.split("."):
            found = getattr(found, part)
        if self.per_instance and not any(_assigns(cls, self.attribute) for cls in inspect.getmro(found)):
            raise AttributeError(f"{self.module}.{owner} no longer sets self.{self.attribute}")
        return found


def _assigns(cls: type, attribute: str) -> bool:
    """Whether the source of `cls` (one of Ray's) assigns `self.<attribute>` in any of its methods."""
    if not cls.__module__.startswith("ray."):
        return False
    return any(
        isinstance(node, ast.Attribute)
        and isinstance(node.ctx, ast.Store)
        and node.attr == attribute
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
        for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(cls))))
    )


# ---------------------------------------------------------------------------------------------
# the list

REPORT_LOG_FILE = PrivateApi(
    "ray.train.v2._internal.execution.context",
    "__file__",
    "Ray Train logs every report, metrics and all, at INFO under a logger named by this file's path",
)
BOOTSTRAP_ADDRESS = PrivateApi(
    "ray._private.services",
    "find_bootstrap_address",
    "Ray's own rule for whether `ray.init()` joins a running cluster (the last `ray start` here)",
)
GLOBAL_WORKER = PrivateApi(
    "ray._private.worker", "global_worker", "this process's connection to Ray, to ask whether it started the head"
)
WORKER_NODE = PrivateApi(
    "ray._private.worker", "Worker.node", "the node this process is connected to", per_instance=True
)
NODE_IS_HEAD = PrivateApi(
    "ray._private.node",
    "Node.head",
    "true when this process started the head itself: a local Ray with no autoscaler to wait for",
    per_instance=True,
)
RESOURCE_SPEC = PrivateApi(
    "ray._private.resource_and_label_spec",
    "ResourceAndLabelSpec",
    "what a Ray started here would offer, counted as Ray counts it (cgroups, CUDA_VISIBLE_DEVICES ...)",
)
RESOURCE_SPEC_RESOLVE = PrivateApi(
    "ray._private.resource_and_label_spec", "ResourceAndLabelSpec.resolve", "fills in the counts for a head node"
)
RESOURCE_SPEC_FIELDS = tuple(
    PrivateApi(
        "ray._private.resource_and_label_spec",
        f"ResourceAndLabelSpec.{field}",
        "what the resolved spec counts",
        per_instance=True,
    )
    for field in ("num_cpus", "num_gpus", "resources")
)
CHECKPOINT_DESTINATION = PrivateApi(
    "ray.train.v2._internal.execution.storage",
    "StorageContext.build_checkpoint_path_from_name",
    "where Ray expects a checkpoint that raygan uploads itself (train.get_context().get_storage())",
)
STORAGE_FILESYSTEM = PrivateApi(
    "ray.train.v2._internal.execution.storage",
    "StorageContext.storage_filesystem",
    "the filesystem of that destination (raygan's patient one for object stores)",
    per_instance=True,
)
WANDB_LOGGING_ACTOR = PrivateApi(
    "ray.air.integrations.wandb",
    "_WandbLoggingActor",
    "the W&B callback's per-trial actor, subclassed to wait for W&B's service before Ray kills it",
)
WANDB_ACTOR_SDK = PrivateApi(
    "ray.air.integrations.wandb", "_WandbLoggingActor._wandb", "the actor's wandb module", per_instance=True
)
WANDB_ACTOR_CLASS = PrivateApi(
    "ray.air.integrations.wandb",
    "WandbLoggerCallback._logger_actor_cls",
    "the hook through which the W&B callback runs that subclass",
)
WANDB_INIT_KWARGS = PrivateApi(
    "ray.air.integrations.wandb",
    "WandbLoggerCallback.kwargs",
    "what the callback passes to wandb.init: the resolved config goes in as the run's config",
    per_instance=True,
)
MLFLOW_TRIAL_RUNS = PrivateApi(
    "ray.air.integrations.mlflow",
    "MLflowLoggerCallback._trial_runs",
    "trial -> MLflow run id: a restarted trial logs into its run, params written once",
    per_instance=True,
)
MLFLOW_UTIL = PrivateApi(
    "ray.air.integrations.mlflow",
    "MLflowLoggerCallback.mlflow_util",
    "the callback's MLflow session, which starts each trial's run with its tags",
    per_instance=True,
)

PRIVATE_APIS = (
    REPORT_LOG_FILE,
    BOOTSTRAP_ADDRESS,
    GLOBAL_WORKER,
    WORKER_NODE,
    NODE_IS_HEAD,
    RESOURCE_SPEC,
    RESOURCE_SPEC_RESOLVE,
    *RESOURCE_SPEC_FIELDS,
    CHECKPOINT_DESTINATION,
    STORAGE_FILESYSTEM,
    WANDB_LOGGING_ACTOR,
    WANDB_ACTOR_SDK,
    WANDB_ACTOR_CLASS,
    WANDB_INIT_KWARGS,
    MLFLOW_TRIAL_RUNS,
    MLFLOW_UTIL,
)


# ---------------------------------------------------------------------------------------------
# what raygan calls


def report_log_name() -> str:
    """The name of the logger that Ray Train writes every report to (raygan quiets it)."""
    return REPORT_LOG_FILE.lookup()


def bootstrap_address() -> str | None:
    """The address of the Ray that `ray.init()` without one would join (the last `ray start` here), or None."""
    return BOOTSTRAP_ADDRESS.lookup()(None)


def started_head() -> bool:
    """Whether this process started the Ray it is connected to (a head node of its own), not joined one."""
    node = GLOBAL_WORKER.lookup().node  # None while disconnected
    return node is not None and node.head


def local_resources() -> dict[str, float]:
    """What a Ray started on this machine would offer: {"CPU": n, "GPU": n, custom resource: n ...}."""
    spec_class = RESOURCE_SPEC.lookup()
    spec = spec_class().resolve(is_head=True)
    return {"CPU": spec.num_cpus, "GPU": spec.num_gpus, **spec.resources}


def checkpoint_destination(dir_name: str) -> tuple[Any, str]:
    """(filesystem, path) where Ray Train expects the current run's checkpoint `dir_name`; in a Train worker."""
    import ray.train

    storage = ray.train.get_context().get_storage()  # a StorageContext (a DeveloperAPI returning an internal class)
    return storage.storage_filesystem, storage.build_checkpoint_path_from_name(dir_name)


def wandb_logging_actor() -> type:
    """The class of the W&B callback's logging actor, to subclass."""
    return WANDB_LOGGING_ACTOR.lookup()


def actor_wandb(actor) -> Any:
    """The wandb module a W&B logging actor uses."""
    return actor._wandb


def set_wandb_logging_actor(callback_class: type, actor_class: type) -> type:
    """`callback_class` (a WandbLoggerCallback) with its trials logged by `actor_class`; returns it."""
    callback_class._logger_actor_cls = actor_class
    return callback_class


def wandb_logging_actor_of(callback_class: type) -> type:
    return callback_class._logger_actor_cls


def wandb_init_kwargs(callback) -> dict[str, Any]:
    """What a WandbLoggerCallback passes to `wandb.init` for each trial (a dict it owns, to update)."""
    return callback.kwargs


def mlflow_trial_runs(callback) -> dict:
    """An MLflowLoggerCallback's trial -> MLflow run id (a dict it owns, to update)."""
    return callback._trial_runs


def mlflow_util(callback) -> Any:
    """An MLflowLoggerCallback's MLflow session (`start_run(tags=..., run_name=...)`)."""
    return callback.mlflow_util
