"""The rule labeler and the NegEx baseline on real reports: IU X-ray (Open-i) with human MeSH tags.

The Indiana University chest X-ray collection (Demner-Fushman et al., JAMIA 2016) tags every report
with MeSH-style terms assigned by people ("Cardiomegaly/mild", "Pulmonary Atelectasis/base/left",
"normal"). They are mapped to the 14 CheXpert classes below (approximately: "Pulmonary Congestion" and
"Costophrenic Angle/blunted" count as Edema and Pleural Effusion, which the CheXpert convention marks
uncertain). Tags only say what is present, so the score is the F1 of "positive or uncertain" per class.
The file is not shipped; pass the ``indiana_reports.csv`` you have (columns uid, MeSH, Problems, image,
indication, comparison, findings, impression).

Run: PYTHONPATH=src python benchmarks/labeler_iu_xray.py path/to/indiana_reports.csv
"""

import csv
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from labeler_eval import f1, negex_baseline

from cvlm.findings import CHEXPERT_FINDINGS
from cvlm.labeler import RuleLabeler

MESH_TO_CHEXPERT = {
    "Enlarged Cardiomediastinum": [r"^Mediastinum/.*(?:widened|enlarged|prominent)"],
    "Cardiomegaly": [r"^Cardiomegaly", r"^Cardiac Shadow/(?:enlarged|borderline)", r"^Heart/enlarged"],
    "Lung Opacity": [
        r"^Opacity",
        r"^Airspace Disease",
        r"^Infiltrate",
        r"^Density/lung",
        r"^Markings",
        r"^Cicatrix",
        r"^Lung Diseases, Interstitial",
    ],
    "Lung Lesion": [r"^Nodule", r"^Mass", r"^Cavitation"],
    "Edema": [r"^Pulmonary Edema", r"^Pulmonary Congestion", r"^Heart Failure"],
    "Consolidation": [r"^Consolidation"],
    "Pneumonia": [r"^Pneumonia"],
    "Atelectasis": [r"^Pulmonary Atelectasis", r"^Volume Loss"],
    "Pneumothorax": [r"^Pneumothorax", r"^Hydropneumothorax", r"^Hemopneumothorax"],
    "Pleural Effusion": [r"^Pleural Effusion", r"^Costophrenic Angle/.*blunted", r"^Hydropneumothorax"],
    "Pleural Other": [r"^Thickening/pleura", r"^Pleura/", r"^Pulmonary Fibrosis", r"^Fibrosis"],
    "Fracture": [r"^Fractures, Bone"],
    "Support Devices": [
        r"^Catheters, Indwelling",
        r"^Implanted Medical Device",
        r"^Tube, Inserted",
        r"^Medical Device",
        r"^Stents",
    ],
}


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1], encoding="utf-8", newline="") as f:
        rows = [
            r
            for r in csv.DictReader(f)
            if (r["findings"] or r["impression"]) and "No Indexing" not in r["MeSH"]
        ]
    texts = [f"FINDINGS: {r['findings']}\n\nIMPRESSION: {r['impression']}" for r in rows]
    truth = []
    for r in rows:
        tags = [t.strip() for t in r["MeSH"].split(";")]
        row = {n: any(re.search(p, t) for p in ps for t in tags) for n, ps in MESH_TO_CHEXPERT.items()}
        row["No Finding"] = r["MeSH"].strip() == "normal"
        truth.append(row)
    ours = [{n: v in (1, -1) for n, v in row.items()} for row in RuleLabeler().label(texts)]
    base = [{n: v in (1, -1) for n, v in negex_baseline(t).items()} for t in texts]
    print(f"{len(rows)} IU X-ray reports; F1 of positive-or-uncertain against the MeSH tags")
    print(f"{'class':28s} {'n':>5s} {'rules':>6s} {'NegEx':>6s}")
    macro_ours, macro_base = [], []
    for name in CHEXPERT_FINDINGS:
        t = [row[name] for row in truth]
        a, b = f1([p[name] for p in ours], t), f1([p[name] for p in base], t)
        macro_ours.append(a)
        macro_base.append(b)
        print(f"{name:28s} {sum(t):5d} {a:6.3f} {b:6.3f}")
    n = len(macro_ours)
    print(f"{'macro F1':28s} {'':5s} {sum(macro_ours) / n:6.3f} {sum(macro_base) / n:6.3f}")


if __name__ == "__main__":
    main()
