"""CheXbert loading with a tiny random BERT saved in exactly chexbert.pth's key layout (no download)."""

import pickle

import pytest
import torch

from cvlm.findings import CHEXPERT_FINDINGS
from cvlm.labeler import CheXbertError, CheXbertLabeler, load_labeler
from cvlm.labeler.chexbert import build_bert_labeler, encode, load_tokenizer


class Payload:
    """An arbitrary object: torch.load(weights_only=True) must refuse to unpickle it."""


WORDS = [
    "the",
    "heart",
    "is",
    "enlarged",
    "no",
    "pleural",
    "effusion",
    "pneumothorax",
    "mild",
    "cardiomegaly",
]
WORDS += [".", ",", "small", "left", "right", "lung"]


@pytest.fixture(scope="module")
def tiny_chexbert(tmp_path_factory):
    """A 2-layer BERT with CheXbert's heads, saved as {'model_state_dict': DataParallel keys}."""
    from transformers import BertConfig

    folder = tmp_path_factory.mktemp("chexbert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    model = build_bert_labeler(config)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    checkpoint = folder / "chexbert.pth"
    torch.save({"epoch": 3, "model_state_dict": state, "optimizer_state_dict": {}}, checkpoint)
    (folder / "tokenizer" / "config.json").write_text('{"num_attention_heads": 2}')
    return checkpoint, folder / "tokenizer", model


def test_key_layout_is_chexberts(tiny_chexbert):
    checkpoint, _, _ = tiny_chexbert
    keys = torch.load(checkpoint, weights_only=True)["model_state_dict"].keys()
    assert all(k.startswith(("module.bert.", "module.linear_heads.")) for k in keys)
    assert "module.linear_heads.13.weight" in keys and "module.bert.pooler.dense.weight" in keys
    assert len(keys) == 67  # formats.md 2.2: 67 keys for 2 layers


def test_loads_and_labels_every_class(tiny_chexbert):
    checkpoint, tokenizer, reference = tiny_chexbert
    labeler = load_labeler("chexbert", checkpoint=checkpoint, tokenizer=tokenizer, device="cpu")
    out = labeler.label(["The heart is enlarged.", "No pleural effusion.", "small left pneumothorax"])
    assert len(out) == 3 and all(list(row) == list(CHEXPERT_FINDINGS) for row in out)
    assert all(v in (1, 0, -1, None) for row in out for v in row.values())
    assert all(row["No Finding"] in (1, None) for row in out)
    # Same weights, same logits: the loaded model is the saved one.
    loaded = labeler.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in reference.state_dict().items())


def test_head_classes_map_to_chexpert_values(tiny_chexbert):
    checkpoint, tokenizer, _ = tiny_chexbert
    labeler = CheXbertLabeler(checkpoint, tokenizer, device="cpu")
    # Force each head's argmax through its bias: blank, positive, negative, uncertain in turn.
    with torch.no_grad():
        for i, head in enumerate(labeler.model.linear_heads):
            head.weight.zero_()
            head.bias.zero_()
            head.bias[i % head.bias.numel()] = 5.0
    row = labeler.label(["mild cardiomegaly"])[0]
    expected = [None, 1, 0, -1] * 4
    assert [row[n] for n in CHEXPERT_FINDINGS[:13]] == expected[:13]
    assert row["No Finding"] == 1  # head 13 has 2 classes; 13 % 2 = 1 is "positive"


def test_tokenisation_is_chexberts_and_truncates_at_512(tiny_chexbert):
    _, tokenizer_dir, _ = tiny_chexbert
    tok = load_tokenizer(tokenizer_dir)
    ids = encode(tok, ["The heart\n  is   enlarged."])[0]
    assert ids == [
        tok.cls_token_id,
        *tok.convert_tokens_to_ids(tok.tokenize("the heart is enlarged.")),
        tok.sep_token_id,
    ]
    long_ids = encode(tok, ["mild cardiomegaly " * 600])[0]
    assert len(long_ids) == 512 and long_ids[0] == tok.cls_token_id and long_ids[-1] == tok.sep_token_id
    labeler = CheXbertLabeler(tiny_chexbert[0], tokenizer_dir, device="cpu", batch_size=2)
    assert len(labeler.label(["mild cardiomegaly " * 600, "no effusion", ""])) == 3


def test_transformers4_position_ids_buffer_is_accepted(tmp_path, tiny_chexbert):
    checkpoint, tokenizer, _ = tiny_chexbert
    state = torch.load(checkpoint, weights_only=True)["model_state_dict"]
    state["module.bert.embeddings.position_ids"] = torch.arange(512)[None]
    older = tmp_path / "chexbert_tf4.pth"
    torch.save({"model_state_dict": state}, older)
    assert CheXbertLabeler(older, tokenizer, device="cpu").label(["no effusion"])[0].keys() == set(
        CHEXPERT_FINDINGS
    )


def test_non_chexbert_files_get_a_clear_error(tmp_path, tiny_chexbert):
    _, tokenizer, _ = tiny_chexbert
    other = tmp_path / "other.pth"
    torch.save({"model_state_dict": {"encoder.weight": torch.zeros(2, 2)}}, other)
    with pytest.raises(CheXbertError, match="not a CheXbert checkpoint"):
        CheXbertLabeler(other, tokenizer)
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheXbertError, match="weights_only"):
        CheXbertLabeler(text, tokenizer)
    unsafe = tmp_path / "unsafe.pth"
    with unsafe.open("wb") as f:
        pickle.dump({"model_state_dict": Payload()}, f, protocol=2)
    with pytest.raises(CheXbertError):
        CheXbertLabeler(unsafe, tokenizer)
    with pytest.raises(FileNotFoundError):
        CheXbertLabeler(tmp_path / "missing.pth", tokenizer)
    with pytest.raises(CheXbertError, match=r"vocab\.txt"):
        CheXbertLabeler(tiny_chexbert[0], tmp_path)


def test_load_labeler_arguments(tiny_chexbert, tmp_path):
    with pytest.raises(ValueError, match="--checkpoint"):
        load_labeler("chexbert")
    with pytest.raises(ValueError, match="Unknown labeler"):
        load_labeler("gpt")
    extras = tmp_path / "extras.json"
    extras.write_text('[{"name": "Hiatal Hernia", "synonyms": ["hiatal hernia"]}]')
    with pytest.raises(ValueError, match="fixed heads"):
        load_labeler("chexbert", tiny_chexbert[0], tiny_chexbert[1], extra_findings=extras)
