import subprocess
import sys

from cvlm.cli import build_parser, main


def test_env_prints_versions(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    for key in ("python", "torch", "diffusers", "transformers", "accelerate", "device", "bundled models"):
        assert f"- {key}:" in out


def test_contract_verbs_exist():
    parser = build_parser()
    verbs = set(parser._subparsers._group_actions[0].choices)
    assert {
        "phantoms",
        "label",
        "generate",
        "train-generator",
        "prepare",
        "train",
        "validate",
        "demo",
        "env",
    } <= verbs


def test_console_script_runs():
    result = subprocess.run(
        [sys.executable, "-m", "cvlm.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "phantoms" in result.stdout
