import hashlib

import numpy as np
import pytest

from cvlm.data import load_dataset, read_report
from cvlm.generators import CallableGenerator
from cvlm.phantoms.world import write_world
from cvlm.scoring import format_f1_table, score_generator, shortcut_dependence
from cvlm.xray import read_xray


def _key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image, np.float32).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_world(tmp_path_factory.mktemp("score") / "w", n=40, seed=123, workers=1)


@pytest.fixture(scope="module")
def shortcut_world(tmp_path_factory):
    return write_world(tmp_path_factory.mktemp("shortcut") / "w", n=60, seed=321, shortcut=True, workers=1)


def _oracle(root):
    """A generator that writes each image's own ground-truth report."""
    by_image = {_key(read_xray(r.image_path)): read_report(r.report_path) for r in load_dataset(root)}
    return CallableGenerator(lambda images: [by_image[_key(im)] for im in images], name="oracle")


def test_oracle_scores_the_labeler_ceiling(world):
    score = score_generator(_oracle(world), world, split=None)
    assert score["n_images"] == 40 and score["generator"] == "oracle"
    assert score["macro_f1"] == score["labeler_ceiling_macro_f1"] > 0.8
    assert set(score["per_class"]) == set(score["classes"])
    assert all(score["per_class"][c]["support"] > 0 for c in score["classes"]), score["per_class"]
    assert "**macro F1**" in format_f1_table(score)


def test_a_generator_that_writes_nothing_scores_zero(world):
    silent = CallableGenerator(lambda images: ["FINDINGS: No acute process."] * len(images))
    score = score_generator(silent, world, split=None)
    assert score["macro_f1"] == 0.0 and score["micro_f1"] == 0.0


def test_scoring_needs_truth(tmp_path):
    with pytest.raises(ValueError):
        score_generator(CallableGenerator(lambda images: [""] * len(images)), tmp_path)


def test_shortcut_dependence_of_a_mark_reader(shortcut_world):
    """A generator that writes pneumothorax exactly when the mark is there depends fully on the mark."""
    marked = {_key(read_xray(r.image_path)) for r in load_dataset(shortcut_world) if r.mark_box is not None}

    def mark_reader(images):
        return ["There is a pneumothorax." if _key(im) in marked else "No pneumothorax." for im in images]

    result = shortcut_dependence(CallableGenerator(mark_reader), shortcut_world, "pneumothorax", split=None)
    groups = result["groups"]
    assert result["finding"] == "Pneumothorax"
    assert groups["mark only"]["written"] == 1.0 and groups["neither"]["written"] == 0.0
    assert sum(g["n"] for g in groups.values()) == 60
    # Pasted marks are new images the reader has never seen: it cannot see them, so nothing changes.
    assert result["pasted_mark"]["written_after"] == 0.0


def test_shortcut_dependence_needs_a_shortcut_world(world):
    with pytest.raises(ValueError, match="shortcut"):
        shortcut_dependence(CallableGenerator(lambda images: [""] * len(images)), world, split=None)
