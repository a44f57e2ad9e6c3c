"""Every argument of R2Gen's and R2GenCMN's main.py reaches the model as the type their argparse gives it."""

import json

import numpy as np
import pytest
from _generator_stand_ins import R2GEN_ARGS, R2GEN_CODE, build_r2gen_stand_in

from cvlm.generators import GeneratorError, load_generator, parse_r2gen_spec
from cvlm.generators.r2gen import ARGUMENT_TYPES, convert_argument

# Written from the add_argument lines of cuhksz-nlp/R2Gen main.py (5a2e63f; zhjohnchan/R2Gen main_test.py adds
# --load) and zhjohnchan/R2GenCMN main_train.py / main_test.py (df4aac9): each argument, a value as a user
# types it on the command line, and what the model must receive. Bools are what the user means (the official
# type=bool would turn "False" into True).
R2GEN_MAIN = {
    "image_dir": ("data/mimic_cxr/images/", "data/mimic_cxr/images/"),
    "ann_path": ("data/mimic_cxr/annotation.json", "data/mimic_cxr/annotation.json"),
    "dataset_name": ("mimic_cxr", "mimic_cxr"),
    "max_seq_length": ("100", 100),
    "threshold": ("10", 10),
    "num_workers": ("2", 2),
    "batch_size": ("16", 16),
    "visual_extractor": ("resnet101", "resnet101"),
    "visual_extractor_pretrained": ("False", False),
    "d_model": ("512", 512),
    "d_ff": ("512", 512),
    "d_vf": ("2048", 2048),
    "num_heads": ("8", 8),
    "num_layers": ("3", 3),
    "dropout": ("0.1", 0.1),
    "logit_layers": ("1", 1),
    "bos_idx": ("0", 0),
    "eos_idx": ("0", 0),
    "pad_idx": ("0", 0),
    "use_bn": ("0", 0),
    "drop_prob_lm": ("0.5", 0.5),
    "rm_num_slots": ("3", 3),
    "rm_num_heads": ("8", 8),
    "rm_d_model": ("512", 512),
    "sample_method": ("beam_search", "beam_search"),
    "beam_size": ("3", 3),
    "temperature": ("1.0", 1.0),
    "sample_n": ("1", 1),
    "group_size": ("1", 1),
    "output_logsoftmax": ("1", 1),
    "decoding_constraint": ("0", 0),
    "block_trigrams": ("1", 1),
    "n_gpu": ("1", 1),
    "epochs": ("30", 30),
    "save_dir": ("results/mimic_cxr", "results/mimic_cxr"),
    "record_dir": ("records/", "records/"),
    "save_period": ("1", 1),
    "monitor_mode": ("max", "max"),
    "monitor_metric": ("BLEU_4", "BLEU_4"),
    "early_stop": ("50", 50),
    "optim": ("Adam", "Adam"),
    "lr_ve": ("5e-5", 5e-5),
    "lr_ed": ("1e-4", 1e-4),
    "weight_decay": ("5e-5", 5e-5),
    "amsgrad": ("True", True),
    "lr_scheduler": ("StepLR", "StepLR"),
    "step_size": ("50", 50),
    "gamma": ("0.1", 0.1),
    "seed": ("456789", 456789),
    "resume": ("results/mimic_cxr/current_checkpoint.pth", "results/mimic_cxr/current_checkpoint.pth"),
    "load": ("data/model_mimic_cxr.pth", "data/model_mimic_cxr.pth"),
}
R2GENCMN_MAIN = {
    **{k: v for k, v in R2GEN_MAIN.items() if not k.startswith("rm_")},
    "topk": ("32", 32),
    "cmm_size": ("2048", 2048),
    "cmm_dim": ("512", 512),
    "log_period": ("1000", 1000),
    "lr_ed": ("7e-4", 7e-4),
    "adam_betas": ("0.9;0.98", (0.9, 0.98)),
    "adam_eps": ("1e-9", 1e-9),
    "noamopt_warmup": ("5000", 5000),
    "noamopt_factor": ("1", 1),
}


def test_the_table_holds_every_official_argument_and_no_other():
    assert set(ARGUMENT_TYPES) == set(R2GEN_MAIN) | set(R2GENCMN_MAIN), (
        f"missing: {sorted(set(R2GEN_MAIN) | set(R2GENCMN_MAIN) - set(ARGUMENT_TYPES))}, "
        f"extra: {sorted(set(ARGUMENT_TYPES) - set(R2GEN_MAIN) - set(R2GENCMN_MAIN))}"
    )


@pytest.mark.parametrize("table", [R2GEN_MAIN, R2GENCMN_MAIN], ids=["R2Gen", "R2GenCMN"])
def test_every_argument_is_converted_to_its_argparse_type(table):
    for key, (typed, expected) in table.items():
        got = convert_argument(key, typed)
        assert got == expected and type(got) is type(expected), f"{key}={typed!r} gave {got!r} ({type(got)})"


@pytest.mark.parametrize("table", [R2GEN_MAIN, R2GENCMN_MAIN], ids=["R2Gen", "R2GenCMN"])
def test_spec_strings_carry_every_argument_typed(table):
    own = {"ann_path", "dataset_name", "threshold", "max_seq_length", "beam_size", "batch_size"}
    items = ",".join(f"{k}={typed}" for k, (typed, _) in table.items() if k not in own)
    spec = parse_r2gen_spec(f"CODE,model_best.pth,annotation.json,dataset=mimic_cxr,threshold=10,{items}")
    assert spec["dataset"] == "mimic_cxr" and spec["threshold"] == 10
    for key, value in spec["args"].items():
        expected = table[key][1]
        assert value == expected and type(value) is type(expected), f"{key}: {value!r}"
    assert spec["args"]["visual_extractor_pretrained"] is False and spec["args"]["dropout"] == 0.1


def test_bools_ints_and_tuples_from_words_and_json():
    assert convert_argument("visual_extractor_pretrained", "false") is False
    assert convert_argument("amsgrad", "1") is True and convert_argument("amsgrad", True) is True
    assert convert_argument("dropout", 0) == 0.0 and isinstance(convert_argument("dropout", 0), float)
    assert convert_argument("adam_betas", [0.9, 0.98]) == (0.9, 0.98)
    assert convert_argument("adam_betas", "(0.9 0.98)") == (0.9, 0.98)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("dropout", "0,1x", "expected a number"),
        ("num_layers", "3.0", "expected an integer"),
        ("num_layers", 2.5, "expected an integer"),
        ("num_layers", True, "expected an integer"),
        ("visual_extractor_pretrained", "Flase", "expected True or False"),
        ("visual_extractor_pretrained", "yes please", "expected True or False"),
        ("amsgrad", 1, "expected True or False"),
        ("adam_betas", "0.9;x", "numbers separated"),
        ("dataset_name", "chexpert", "choose one of iu_xray, mimic_cxr"),
        ("monitor_mode", "avg", "choose one of min, max"),
        ("dropuot", "0.1", "Did you mean dropout"),
    ],
)
def test_a_wrong_value_or_name_is_refused_with_the_reason(key, value, message):
    with pytest.raises(GeneratorError, match=message):
        convert_argument(key, value)


def test_spec_errors_name_the_item():
    with pytest.raises(GeneratorError, match="'dropout' is not key=value"):
        parse_r2gen_spec("C,K,A,dropout")
    with pytest.raises(GeneratorError, match="d_modl"):
        parse_r2gen_spec("C,K,A,d_modl=512")


def test_the_model_receives_typed_arguments(tmp_path):
    checkpoint, annotation = build_r2gen_stand_in(tmp_path / "mimic")
    stand_in = ",".join(f"{k}={v}" for k, v in R2GEN_ARGS.items())
    spec = (
        f"r2gen:{R2GEN_CODE},{checkpoint},{annotation},threshold=2,max_seq_length=12,{stand_in},"
        "visual_extractor_pretrained=False,dropout=0.1,drop_prob_lm=0.5,temperature=1.0,block_trigrams=1"
    )
    g = load_generator(spec, device="cpu")
    expected = {"visual_extractor_pretrained": False, "dropout": 0.1, "drop_prob_lm": 0.5, "d_vf": 512}
    got = {k: getattr(g.args, k) for k in expected}
    assert got == expected, got
    assert type(g.args.dropout) is float and type(g.args.d_vf) is int
    assert g.generate([np.full((64, 64), 0.5, dtype=np.float32)])[0]
    with pytest.raises(GeneratorError, match="would download ImageNet weights"):
        load_generator(spec.replace("visual_extractor_pretrained=False", "visual_extractor_pretrained=True"))


def test_spec_files_are_typed_too(tmp_path):
    checkpoint, annotation = build_r2gen_stand_in(tmp_path / "mimic")
    spec = {
        "adapter": "r2gen",
        "code_dir": str(R2GEN_CODE),
        "checkpoint": str(checkpoint),
        "annotation": str(annotation),
        "threshold": 2,
        "max_seq_length": 12,
        "args": {**R2GEN_ARGS, "dropout": "0.1", "num_layers": 2.5},
    }
    path = tmp_path / "g.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(GeneratorError, match=r"num_layers=2\.5: expected an integer"):
        load_generator(path, device="cpu")
    spec["args"]["num_layers"] = 3
    path.write_text(json.dumps(spec), encoding="utf-8")
    assert load_generator(path, device="cpu").args.dropout == 0.1
