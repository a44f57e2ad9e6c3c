"""cvlm's CPU threads: the default count, the passive wait policy, and the user's own settings first."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cvlm.threads import WAIT_POLICY, available_cores, cgroup_cores, configure_threads, default_threads

SRC = Path(__file__).resolve().parents[1] / "src"
SETTINGS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "KMP_BLOCKTIME",
)


@pytest.fixture
def clean_env():
    """No thread settings in the environment during the test; the session's own restored after it."""
    saved = dict(os.environ)
    for name in SETTINGS:
        os.environ.pop(name, None)
    yield os.environ
    os.environ.clear()
    os.environ.update(saved)


def test_available_cores_follow_the_affinity_and_the_quota():
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cgroup_cores()
    assert available_cores() == (expected if quota is None else min(expected, quota)) >= 1


@pytest.mark.parametrize(
    ("files", "cores"),
    [
        ({"cpu.max": "200000 100000\n"}, 2),  # cgroup v2, docker --cpus 2
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs: two threads
        ({"cpu.max": "max 100000\n"}, None),  # no quota
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu.max": "garbage"}, None),
        ({}, None),
    ],
)
def test_cgroup_quota(tmp_path, files, cores):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cores(tmp_path) == cores


def test_defaults_use_every_usable_core_and_a_passive_wait(clean_env):
    assert default_threads() == available_cores()
    count = configure_threads()
    assert count == available_cores() == torch.get_num_threads(), (count, torch.get_num_threads())
    assert os.environ["OMP_WAIT_POLICY"] == WAIT_POLICY == "PASSIVE"
    assert os.environ["OMP_NUM_THREADS"] == str(count)


def test_the_users_settings_win(clean_env):
    clean_env["OMP_NUM_THREADS"] = "1"
    clean_env["GOMP_SPINCOUNT"] = "1000"
    assert configure_threads() == 1 == torch.get_num_threads()
    assert "OMP_WAIT_POLICY" not in os.environ, "a user tuning spinning himself keeps his setting"
    clean_env["OMP_WAIT_POLICY"] = "ACTIVE"
    assert configure_threads(3) == 3 == torch.get_num_threads()  # an explicit --threads beats the env
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE" and os.environ["OMP_NUM_THREADS"] == "3"
    with pytest.raises(ValueError, match="at least 1"):
        configure_threads(0)


def test_the_command_sets_the_policy_before_torch_starts_openmp(clean_env):
    # A fresh process, as a user runs it: by the time torch loads, the policy and the count are set.
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS} | {"PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-m", "cvlm.cli", "env", "--threads", "1"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "- OpenMP wait policy: PASSIVE" in done.stdout, done.stdout
    assert "- device: cpu (1 threads)" in done.stdout or "- device: cuda" in done.stdout, done.stdout
