"""Phantom rendering: speed per image, linear-probe difficulty per finding, and the contact sheet.

PYTHONPATH=src python benchmarks/phantom_render.py --time            # ms per image by size
PYTHONPATH=src python benchmarks/phantom_render.py --auc 1000        # 16x16 linear-probe AUC table
PYTHONPATH=src python benchmarks/phantom_render.py --sheet docs/contact_sheet.png
"""

from __future__ import annotations

import argparse
import os
import time

import cv2
import numpy as np

from cvlm.findings import ABNORMALITIES
from cvlm.phantoms.case import Case, FindingInstance
from cvlm.phantoms.contact_sheet import contact_sheet
from cvlm.phantoms.difficulty import linear_probe_aucs
from cvlm.phantoms.render import render_case

# Subtle findings (should NOT be linearly detectable at 16x16) and obvious ones (should be).
PROBES = [
    ("small nodule", FindingInstance("Lung Lesion", None, "mild", "nodule")),
    ("nodule", FindingInstance("Lung Lesion", None, "moderate", "nodule")),
    ("mild fracture", FindingInstance("Fracture", None, "mild")),
    ("severe fracture", FindingInstance("Fracture", None, "severe")),
    ("small pneumothorax", FindingInstance("Pneumothorax", None, "mild")),
    ("large pneumothorax", FindingInstance("Pneumothorax", None, "severe")),
    ("mild cardiomegaly", FindingInstance("Cardiomegaly", None, "mild")),
    ("moderate cardiomegaly", FindingInstance("Cardiomegaly", None, "moderate")),
    ("small effusion", FindingInstance("Pleural Effusion", None, "mild")),
    ("large effusion", FindingInstance("Pleural Effusion", None, "severe")),
    ("mass", FindingInstance("Lung Lesion", None, "moderate", "mass")),
    ("pacemaker", FindingInstance("Support Devices", None, None, "pacemaker")),
]


def real_radiograph(size: int) -> np.ndarray:
    """RG1_UNCR.dcm (pydicom-data), MONOCHROME1 inverted, centre square, area-downscaled, [0, 1]."""
    import pydicom
    from pydicom.data import get_testdata_file

    a = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm")).pixel_array.astype(np.float32)
    a = a.max() - a
    h, w = a.shape
    m = min(h, w)
    a = a[(h - m) // 2 : (h - m) // 2 + m, (w - m) // 2 : (w - m) // 2 + m]
    a = cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA)
    lo, hi = np.percentile(a, [0.5, 99.5])
    return np.clip((a - lo) / (hi - lo), 0, 1)


def bench_time(repeat: int) -> None:
    """Per-image cost on one core: CPU time of this process (robust to other load) and wall time."""
    cv2.setNumThreads(1)
    many = tuple(
        FindingInstance(n, lat, sev, var)
        for n, lat, sev, var in [
            ("Cardiomegaly", None, "moderate", None),
            ("Pleural Effusion", "left", "moderate", None),
            ("Support Devices", None, None, "et_tube"),
        ]
    )
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| size | normal: CPU ms / wall ms | 3 findings: CPU ms / wall ms |")
    print("|---|---|---|")
    for size in (64, 128, 256, 512):
        n = max(5, repeat * 128 * 128 // (size * size))
        out = []
        for findings in ((), many):
            render_case(Case(0, findings), size)  # warm-up
            cpu, wall = time.process_time(), time.perf_counter()
            for s in range(n):
                render_case(Case(s, findings), size)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            out.append(f"{1000 * cpu / n:.1f} / {1000 * wall / n:.1f}")
        print(f"| {size} | {out[0]} | {out[1]} |", flush=True)


def bench_auc(n: int) -> None:
    print(f"| probe (16x16 logistic regression, {n} cases, 30% test) | AUC |")
    print("|---|---|")
    for (label, _), value in zip(PROBES, linear_probe_aucs([f for _, f in PROBES], n), strict=True):
        print(f"| {label} | {value:.3f} |")


def sheet(path: str) -> None:
    lat = {
        "Lung Opacity": "right",
        "Lung Lesion": "left",
        "Consolidation": "right",
        "Pneumonia": "bilateral",
        "Atelectasis": "right",
        "Pneumothorax": "left",
        "Pleural Effusion": "right",
        "Pleural Other": "left",
        "Fracture": "right",
        "Edema": "bilateral",
    }
    var = {
        "Lung Lesion": "mass",
        "Support Devices": "pacemaker",
        "Consolidation": "upper",
        "Atelectasis": "plate",
        "Pleural Other": "plaque",
        "Lung Opacity": "lower",
    }
    cases = [Case(100)]
    for i, name in enumerate(ABNORMALITIES):
        sev = None if name == "Support Devices" else ("moderate" if name != "Fracture" else "severe")
        cases.append(Case(101 + i, (FindingInstance(name, lat.get(name), sev, var.get(name)),)))
    cases.append(
        Case(
            200,
            (
                FindingInstance("Cardiomegaly", None, "moderate"),
                FindingInstance("Edema", "bilateral", "moderate"),
                FindingInstance("Pleural Effusion", "bilateral", "mild"),
                FindingInstance("Support Devices", None, None, "et_tube"),
            ),
            shortcut_mark=True,
        )
    )
    out = contact_sheet(
        cases, path, 128, extra_tiles=[("real radiograph RG1_UNCR.dcm (128x128)", real_radiograph(128))]
    )
    print(f"wrote {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--time", action="store_true", help="time rendering at 64..512 px")
    p.add_argument("--repeat", type=int, default=200, help="images per timing at 128 px")
    p.add_argument("--auc", type=int, default=0, metavar="N", help="linear-probe AUC table with N cases each")
    p.add_argument("--sheet", metavar="PNG", help="write the contact sheet here")
    a = p.parse_args()
    if a.time:
        bench_time(a.repeat)
    if a.auc:
        bench_auc(a.auc)
    if a.sheet:
        sheet(a.sheet)


if __name__ == "__main__":
    main()
