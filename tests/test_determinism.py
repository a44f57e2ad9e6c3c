"""Determinism: the same inputs, seed and settings give the same bytes on the CPU, whatever the threads.

``cvlm explain`` runs in two fresh processes, one with ``--threads 1`` and one with ``--threads 2``; every
file of every explanation folder must be byte-identical, ``explanation.json`` but for its wall time.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cvlm.environment import RECORDED_PACKAGES
from cvlm.explain import INDEX
from cvlm.phantoms.world import write_world

SRC = Path(__file__).resolve().parents[1] / "src"
TIMING = ("seconds",)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    world = write_world(tmp_path_factory.mktemp("det") / "w", n=3, seed=8, size=96, workers=1)
    return sorted((world / "files").rglob("*.jpg"))


def _explain(images: list[Path], out: Path, threads: int) -> None:
    cmd = [sys.executable, "-m", "cvlm.cli", "explain", "--generator", "phantom-captioner"]
    cmd += ["--model", "phantom-captioner", "--steps", "4", "--add", "Pneumothorax", "--threads"]
    cmd += [str(threads), *map(str, images), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("OMP_NUM_THREADS", None)  # --threads decides
    env.pop("MKL_CBWR", None)  # the cvlm command sets it
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING}


@pytest.mark.slow
@pytest.mark.skipif(
    not torch.backends.mkl.is_available(),
    reason="thread-count independence rests on MKL's strict reproducibility mode (MKL_CBWR)",
)
def test_explain_is_bitwise_identical_on_one_and_two_threads(images, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _explain(images, one, 1)
    _explain(images, two, 2)
    rows = [json.loads(line) for line in (one / INDEX).read_text().splitlines()]
    assert len(rows) == len(images) and all(r["status"] == "ok" for r in rows)
    compared = 0
    for row in rows:
        files_one = sorted(p.relative_to(one) for p in (one / row["folder"]).rglob("*") if p.is_file())
        files_two = sorted(p.relative_to(two) for p in (two / row["folder"]).rglob("*") if p.is_file())
        assert files_one == files_two
        for rel in files_one:
            a, b = (one / rel).read_bytes(), (two / rel).read_bytes()
            if rel.name == "explanation.json":
                record_one, record_two = json.loads(a), json.loads(b)
                assert _without_timing(record_one) == _without_timing(record_two), rel
                assert set(RECORDED_PACKAGES) <= set(record_one["versions"])
                assert record_one["versions"]["cvlm"]
            else:
                assert a == b, f"{rel} differs between 1 and 2 threads"
            compared += 1
    assert compared >= len(images) * 4
