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


def test_explain_and_evaluate_read_the_same_edit_options():
    from cvlm.cli import _explain_options

    parser = build_parser()
    common = ["--generator", "g", "--model", "m"]
    for argv in (
        ["explain", *common, "x.png", "--out", "o"],
        ["evaluate", *common, "--data", "d", "--out", "o"],
    ):
        extra = ["--schedule", "1,1.5,3", "--spare", "core", "--prompts", "raw", "--fixed-point", "2"]
        options = _explain_options(parser.parse_args([*argv, *extra, "--lever", "late"]))
        assert options.schedule == (1.0, 1.5, 3.0), options
        assert options.spare == ("core",) and options.prompts == "raw", options
        assert options.fixed_point == 2 and options.lever == "late", options
        defaults = _explain_options(parser.parse_args(argv))
        assert defaults.schedule == (1.0, 2.0, 3.5, 5.0) and defaults.spare == (
            "keep",
            "core",
            "weaker",
            "hold",
        ), defaults
        assert defaults.fixed_point == 0 and defaults.lever == "guidance", defaults
        assert _explain_options(parser.parse_args([*argv, "--spare", "none"])).spare == ()
        # Frames: the model's level per finding by default, else one level or Otsu for every finding.
        assert defaults.threshold == "model", defaults
        assert _explain_options(parser.parse_args([*argv, "--threshold", "95"])).threshold == 95.0
        assert _explain_options(parser.parse_args([*argv, "--threshold", "auto"])).threshold == "auto"


def test_train_takes_a_reader_and_its_weight_together(tmp_path, capsys):
    halves = (["--reader", "phantom-captioner"], ["--reader-weight", "0.1"], ["--cycle-weight", "0.1"])
    for half in halves:
        argv = ["train", "--config", "vae", "--data", str(tmp_path), "--out", str(tmp_path / "o"), *half]
        assert main(argv) != 0
        err = capsys.readouterr().err
        assert "--reader goes with --reader-weight or --cycle-weight" in err, (half, err)
        assert not (tmp_path / "o").exists()
