"""raygan/ray_private.py against the installed Ray: every private Ray API raygan uses is listed there, and
each is still in the pinned Ray (an upgrade that drops one fails here, naming it, not in a run)."""

import ast
from pathlib import Path

import pytest

from raygan import ray_private

PACKAGE = Path(__file__).resolve().parent.parent / "raygan"
UNDOCUMENTED = ("_WandbLoggingActor", "_logger_actor_cls", "_trial_runs", "_wandb", "mlflow_util", "get_storage")


@pytest.mark.parametrize("api", ray_private.PRIVATE_APIS, ids=lambda api: f"{api.module}:{api.path}")
def test_the_installed_ray_still_has_it(api):
    assert api.why
    try:
        api.lookup()
    except (ImportError, AttributeError) as e:
        pytest.fail(f"Ray no longer has {api.module}.{api.path}, which raygan uses: {api.why} ({e})")


def test_a_name_ray_does_not_have_fails_the_lookup():
    with pytest.raises(AttributeError):
        ray_private.PrivateApi("ray._private.services", "no_such_function", "a test").lookup()
    with pytest.raises(AttributeError, match="no longer sets self.no_such_attribute"):
        ray_private.PrivateApi("ray._private.node", "Node.no_such_attribute", "a test", per_instance=True).lookup()


def test_the_lookups_answer_without_starting_ray():
    import ray

    assert ray_private.report_log_name().endswith("context.py")
    assert ray_private.started_head() is ray.is_initialized()  # a test's own Ray is a head this process started
    assert ray_private.local_resources()["CPU"] >= 1
    address = ray_private.bootstrap_address()
    assert address is None or isinstance(address, str)


def private_uses(path: Path) -> list[str]:
    """`ray._private`/`_internal` imports, underscore names imported from ray, and the listed undocumented
    attributes, in one module of raygan."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ray":
            names = [node.module, *(alias.name for alias in node.names)]
            found += [name for name in names if any(part.startswith("_") for part in name.split("."))]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("ray.") and "._" in a.name]
        elif isinstance(node, ast.Attribute) and node.attr in (*UNDOCUMENTED, "_private", "_internal"):
            if getattr(node.value, "id", None) != "ray_private":  # ray_private.mlflow_util(...) is the way in
                found.append(node.attr)
        elif isinstance(node, ast.Name) and node.id.startswith("_") and node.id in UNDOCUMENTED:
            found.append(node.id)  # a subclass setting Ray's hook: `_logger_actor_cls = ...`
    return found


def test_no_other_module_of_raygan_reaches_into_ray():
    uses = {
        str(path.relative_to(PACKAGE.parent)): private_uses(path)
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "ray_private.py"
    }
    assert {path: found for path, found in uses.items() if found} == {}, "use raygan/ray_private.py"
