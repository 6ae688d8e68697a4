"""The registries' closed lists: capability table, task-owned limits, dependency hints, homes."""

from __future__ import annotations

import pytest

from mobiledeploy.capabilities import app_runtimes, capability_table, check_app, serves_app, summary
from mobiledeploy.errors import InternalError, UserError
from mobiledeploy.targets import all_targets
from mobiledeploy.tasks import TASKS, all_tasks
from mobiledeploy.tolerance import LIMITS, OWNER, Tolerance, register_limit


def test_the_table_has_every_task_and_target_of_the_registries():
    cells = capability_table()
    assert {(c.task, c.target) for c in cells} == {(t, n) for t in TASKS for n in all_targets()}
    # every backend class says which app runtime loads it; the table repeats exactly that
    for c in cells:
        rt = all_targets()[c.target].backend_class().app_runtime
        assert c.app_runtime in (None, rt)
    assert app_runtimes() == list(dict.fromkeys(
        t.backend_class().app_runtime for t in all_targets().values() if t.backend_class().app_runtime))


def test_a_task_without_app_runtimes_has_no_app_and_refusals_quote_the_table():
    assert not serves_app("image-embedding") and serves_app("image-classification")
    with pytest.raises(UserError) as e:
        check_app("image-embedding")
    msg = str(e.value)
    assert "\n" not in msg and "image-embedding: builds on tflite-fp32" in msg and "app runtimes: none" in msg
    assert "litert (tflite-fp32" in summary("object-detection")
    with pytest.raises(UserError, match="the coreml app does not serve"):
        check_app("image-classification", "coreml")


def test_a_backend_that_builds_some_tasks_only_is_refused_for_the_others(monkeypatch, example_copy):
    from mobiledeploy.backends.coreml.backend import CoreMLBackend
    from mobiledeploy.definition import load_definition
    from mobiledeploy.targets import resolve_targets

    monkeypatch.setattr(CoreMLBackend, "tasks", ("semantic-segmentation",))
    d = load_definition(example_copy / "shapes.yaml")
    assert "coreml-fp32" not in [t.name for t in resolve_targets(d)]  # the default skips it
    with pytest.raises(UserError, match=r"target 'coreml-fp32' does not build image-classification models; "
                                        r"targets that do: tflite-fp32"):
        resolve_targets(d, ["coreml-fp32"])
    cell = next(c for c in capability_table() if c.target == "coreml-fp32" and c.task == "image-classification")
    assert not cell.builds


def test_task_limits_are_registered_by_their_task_and_unknown_keys_are_refused():
    for task in all_tasks():
        for key in task.tolerances.get("fp32", Tolerance()).set_values():
            assert OWNER.get(key, task.name) == task.name  # a task's defaults use its own or shared keys
    assert OWNER["min_pixel_agreement"] == "semantic-segmentation" and OWNER["min_box_recall"] == "object-detection"
    with pytest.raises(ValueError, match="unknown limit 'min_nonsense'; allowed: .*min_box_recall"):
        Tolerance(min_nonsense=0.5)
    with pytest.raises(ValueError, match="outside"):
        Tolerance(min_pixel_agreement=1.5)
    with pytest.raises(ValueError, match="finite number"):
        Tolerance(min_box_recall=True)
    assert Tolerance().min_box_recall is None and Tolerance(max_abs=1.0).over({"min_box_recall": 0.5}).min_box_recall == 0.5
    with pytest.raises(InternalError):
        register_limit("image-classification", "min_box_recall", "box_recall", "min", 0, 1)  # another owner
    with pytest.raises(InternalError):
        register_limit("object-detection", "max_abs", "max_abs", "max")  # a shared field
    assert LIMITS["min_box_recall"] == ("box_recall", "min")


def test_backend_defaults_drop_other_tasks_limits():
    from mobiledeploy.tasks import get_task

    mixed = Tolerance(max_abs=1e-4, min_top1_agreement=0.99, min_pixel_agreement=0.9, min_box_recall=0.9)
    assert set(get_task("object-detection").backend_defaults(mixed).set_values()) == {"max_abs", "min_box_recall"}
    assert set(get_task("image-classification").backend_defaults(mixed).set_values()) == {
        "max_abs", "min_top1_agreement"}
    assert set(get_task("image-embedding").backend_defaults(mixed).set_values()) == {"max_abs"}


@pytest.mark.parametrize("module, extra", [("tensorflow", "tflite"), ("keras", "tflite"), ("ai_edge_litert", "tflite"),
                                           ("coremltools", "coreml"), ("executorch", "executorch"), ("torch", "torch"),
                                           ("ray", "sweep"), ("matplotlib", "sweep"), ("PIL", "core"),
                                           ("no_such_module", "all")])
def test_a_missing_imports_extra_comes_from_the_packages_own_metadata(module, extra):
    from mobiledeploy._deps import extra_for

    assert extra_for(module) == extra


def test_bundle_cleanup_covers_every_target_profiles_folder():
    from mobiledeploy.bundle import FIXED_DIRS, bundle_dirs

    dirs = bundle_dirs([t.artifact for t in all_targets().values()])
    assert set(FIXED_DIRS) <= set(dirs)
    assert {t.artifact.split("/")[0] for t in all_targets().values()} <= set(dirs)
    assert "plugin" in bundle_dirs(["plugin/{name}.bin"])  # a new target's folder is cleaned too
