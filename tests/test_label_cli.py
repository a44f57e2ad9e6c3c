import csv
import json

from cvlm.cli import main
from cvlm.labeler.io import iter_label_file


def test_jsonl_in_jsonl_out_skips_malformed_lines(tmp_path, capsys):
    src = tmp_path / "reports.jsonl"
    src.write_text(
        '{"id": "a", "text": "Moderate cardiomegaly. No pneumothorax."}\n'
        "{not json\n"
        '{"id": "b", "report": "Possible small left effusion."}\n'
        '{"id": "c"}\n'
        "\n"
        '{"id": 7, "text": "The lungs are clear."}\n'
    )
    out = tmp_path / "labels.jsonl"
    assert main(["label", str(src), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "reports.jsonl:2" in captured.err and "reports.jsonl:4" in captured.err
    rows = dict(iter_label_file(out))
    assert rows == {
        "a": {"Cardiomegaly": 1, "Pneumothorax": 0},
        "b": {"Pleural Effusion": -1},
        "7": {"No Finding": 1},
    }
    meta = json.loads((tmp_path / "labels.jsonl.meta.json").read_text())
    assert meta["labeler"] == "rules" and meta["n_labeled"] == 3 and len(meta["skipped"]) == 2


def test_csv_in_csv_out_chexpert_convention(tmp_path):
    src = tmp_path / "reports.csv"
    with src.open("w", newline="", encoding="utf-8-sig") as f:  # with a byte-order mark, as Excel writes
        writer = csv.writer(f)
        writer.writerow(["id", "report"])
        writer.writerow(["s1", "Right lower lobe pneumonia.\nNo effusion."])
        writer.writerow(["s2", "Pneumonia cannot be excluded."])
    out = tmp_path / "labels.csv"
    assert main(["label", str(src), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert rows[0]["Pneumonia"] == "1.0" and rows[0]["Pleural Effusion"] == "0.0" and rows[0]["Edema"] == ""
    assert rows[1]["Pneumonia"] == "-1.0" and rows[1]["No Finding"] == ""
    assert list(rows[0])[:3] == ["id", "Enlarged Cardiomediastinum", "Cardiomegaly"]


def test_folder_of_txt_and_extra_findings(tmp_path):
    folder = tmp_path / "files" / "p10" / "p10000032"
    folder.mkdir(parents=True)
    (folder / "s50414267.txt").write_text("FINDINGS: Small hiatal hernia. No pneumothorax.")
    (folder / "s50414268.txt").write_text("FINDINGS: Lungs are clear.")
    extras = tmp_path / "extras.json"
    extras.write_text('[{"name": "Hiatal Hernia", "synonyms": ["hiatal hernia", "hiatus hernia"]}]')
    out = tmp_path / "labels.jsonl"
    assert main(["label", str(tmp_path / "files"), "--out", str(out), "--extra-findings", str(extras)]) == 0
    rows = dict(iter_label_file(out))
    assert rows["p10/p10000032/s50414267"] == {"Pneumothorax": 0, "Hiatal Hernia": 1}
    assert rows["p10/p10000032/s50414268"] == {"No Finding": 1}


def test_bad_inputs_give_clear_errors(tmp_path, capsys):
    bad = tmp_path / "reports.csv"
    bad.write_text("name,text2\nx,y\n")
    assert main(["label", str(bad), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "'id'" in capsys.readouterr().err
    good = tmp_path / "r.jsonl"
    good.write_text('{"id": "a", "text": "x"}\n')
    assert main(["label", str(good), "--out", str(tmp_path / "o.txt")]) == 2
    assert main(["label", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert main(["label", str(good), "--out", str(tmp_path / "o.jsonl"), "--labeler", "chexbert"]) == 2
    assert "--checkpoint" in capsys.readouterr().err
