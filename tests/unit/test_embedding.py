"""The image-embedding task: comparators with the arithmetic written out, its definition section,
its head's shapes, and its refusals."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from mobiledeploy.tasks.embedding import metrics as E


def test_cosine_per_image_and_its_minimum():
    ref = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    out = np.array([[1.0, 1.0], [0.0, 5.0], [0.0, 0.0]])
    # image 0: (1*1 + 0*1) / (1 * sqrt 2) = 0.7071; image 1: parallel -> 1; image 2: both zero -> 1
    np.testing.assert_allclose(E.cosine_per_image(ref, out), [1 / np.sqrt(2), 1.0, 1.0])


def test_nearest_neighbour_agreement_counts_images_whose_neighbour_moved():
    ref = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    # reference neighbours: 0<->1, 2<->3
    assert list(E.nearest(ref)) == [1, 0, 3, 2]
    out = ref.copy()
    out[1] = [0.2, 0.9]  # image 1 now sits beside image 3: its neighbour moves to 3, image 3's to 1
    assert list(E.nearest(out)) == [1, 3, 3, 1]
    assert E.nn_agreement(ref, out) == pytest.approx(2 / 4)
    assert E.nn_agreement(ref[:1], out[:1]) is None  # one image has no neighbour


def test_retrieval_top1_uses_labelled_images_only():
    e = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.5, 0.5]])
    labels = [0, 0, 1, 0, None]
    # 0 -> 1 (same), 1 -> 0 (same), 2 -> 3 (1 vs 0: wrong), 3 -> 2 (wrong); image 4 is unlabelled
    assert E.retrieval_top1(e, labels) == pytest.approx(2 / 4)
    assert E.retrieval_top1(e, [None] * 5) is None and E.retrieval_top1(e, None) is None


def test_metrics_of_a_row(monkeypatch):
    from mobiledeploy.tasks import get_task

    task = get_task("image-embedding")
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(12, 16)).astype(np.float32)
    labels = [i % 3 for i in range(12)]
    refm = task.reference_metrics(ref, labels)
    m = task.metrics(ref, ref.copy(), labels, refm)
    assert m["cosine_min"] == pytest.approx(1.0) and m["nn_agreement"] == 1.0 and m["retrieval_drop"] == 0.0
    noisy = ref + rng.normal(scale=3.0, size=ref.shape).astype(np.float32)
    m = task.metrics(ref, noisy, labels, refm)
    assert m["cosine_min"] < 0.6 and m["nn_agreement"] < 1.0
    checks = {c["key"]: c["ok"] for c in __import__("mobiledeploy.tolerance", fromlist=["judge"]).judge(
        m, task.tolerance("fp32"))}
    assert checks["min_cosine_min"] is False


def _embed_definition(example_copy, **arch):
    data = yaml.safe_load((example_copy / "shapes_embed.yaml").read_text())
    data["architecture"].update(arch)
    path = example_copy / "e.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_embedder_reads_the_classifiers_weights_and_drops_its_last_layer(example_copy):
    from mobiledeploy.architectures.reference import canonical_state, check_weights_file, expected_shapes
    from mobiledeploy.definition import load_definition

    d = load_definition(_embed_definition(example_copy))
    spec = d.architecture_spec()
    check_weights_file(d)  # the classifier's file, head.classifier.* left out
    state = canonical_state(d)
    assert "head.classifier.weight" not in state and set(state) == set(expected_shapes(spec))
    assert d.task_spec().output_shape(spec) == (spec.head_hidden,)
    pooled = load_definition(_embed_definition(example_copy, embedding={"features": "pooled"}))
    assert pooled.task_spec().output_shape(pooled.architecture_spec()) == (spec.last_conv,)
    assert "head.fc1.weight" not in expected_shapes(pooled.architecture_spec())


def test_bad_embedding_sections_are_one_line_exit_2(example_copy):
    from tests.conftest import run_cli

    bad = _embed_definition(example_copy, embedding={"features": "logits"})
    r = run_cli("show", str(bad))
    assert r.returncode == 2 and "architecture.embedding.features" in r.stderr and "Traceback" not in r.stderr
    data = yaml.safe_load((example_copy / "shapes.yaml").read_text())
    data["architecture"]["embedding"] = {"features": "hidden"}
    (example_copy / "c.yaml").write_text(yaml.safe_dump(data))
    r = run_cli("show", str(example_copy / "c.yaml"))
    assert r.returncode == 2 and "architecture.embedding needs task: image-embedding" in r.stderr
