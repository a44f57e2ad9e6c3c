"""The help a newcomer reads: every verb says what it does, shows an example, and every option its default."""

import argparse
import re

import pytest

from cvlm.cli import build_parser


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def test_top_level_help_is_for_users():
    text = build_parser().format_help()
    description = text.split("\n\n")[1]
    assert "``" not in text and ":func:" not in text, text
    assert description.startswith("Explain what a chest X-ray report generator looks at"), description
    assert "cvlm demo" in text and "exit status" in text, text


@pytest.mark.parametrize("verb", sorted(_subparsers()))
def test_every_verb_has_a_description_an_example_and_documented_options(verb):
    sub = _subparsers()[verb]
    text = sub.format_help()
    assert sub.description and len(sub.description.split("\n")[0]) > 20, text
    assert sub.epilog and f"cvlm {verb}" in sub.epilog, text
    assert "``" not in text, text
    formatter = sub._get_formatter()
    for action in _options(sub):
        assert action.help and action.help.strip(), f"{verb} {action.option_strings} has no help"
        shown = formatter._get_help_string(action)
        is_flag = isinstance(action, argparse._StoreTrueAction) and action.default is not None
        if not (action.required or is_flag):
            assert "default" in shown, f"{verb} {action.option_strings}: no default shown in {shown!r}"
    assert "--threads" in text, text


def test_device_means_the_same_on_every_verb():
    defaults = {}
    for verb, sub in _subparsers().items():
        for action in _options(sub):
            if "--device" in action.option_strings:
                defaults[verb] = (action.default, "CUDA when available" in action.help)
    assert set(defaults) >= {"label", "generate", "train-generator", "prepare", "train", "validate", "demo"}
    assert set(defaults.values()) == {("auto", True)}, defaults


def test_help_shows_defaults_in_the_text():
    text = _subparsers()["validate"].format_help().split("\noptions:\n")[1]
    for option, default in (("--n", "32"), ("--steps", "50"), ("--batch-size", "16"), ("--fixed-point", "0")):
        block = re.search(rf"^  {option} \S+\s+(.*?)(?=\n  -|\n\n)", text, re.S | re.M)
        assert block and f"(default: {default})" in " ".join(block.group(1).split()), (option, text)
