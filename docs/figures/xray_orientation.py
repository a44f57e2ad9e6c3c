"""Draw RG1_UNCR.dcm as cvlm reads it, with the regions tests/test_xray.py compares.

Run: ``PYTHONPATH=src python docs/figures/xray_orientation.py`` -> ``docs/figures/rg1_uncr.png``.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle
from pydicom.data import get_testdata_file

from cvlm.xray import read_xray, resize

# (label, y0, y1, x0, x1) as fractions of the image, the same as in test_rg1_loads_upright_...
REGIONS = [
    ("lung R", 0.25, 0.55, 0.15, 0.35),
    ("lung L", 0.25, 0.55, 0.62, 0.82),
    ("spine", 0.25, 0.55, 0.46, 0.54),
    ("liver", 0.78, 0.88, 0.12, 0.35),
    ("heart", 0.6, 0.72, 0.58, 0.72),
    ("mirror", 0.6, 0.72, 0.28, 0.42),
]


def main() -> None:
    """Write the figure next to this script."""
    img = read_xray(get_testdata_file("RG1_UNCR.dcm"))
    small = resize(img, (img.shape[0] // 5, img.shape[1] // 5))
    h, w = small.shape
    fig, ax = plt.subplots(figsize=(4, 4.3), dpi=100)
    ax.imshow(small, cmap="gray", vmin=0, vmax=1)
    for label, y0, y1, x0, x1 in REGIONS:
        mean = img[
            int(y0 * img.shape[0]) : int(y1 * img.shape[0]), int(x0 * img.shape[1]) : int(x1 * img.shape[1])
        ]
        ax.add_patch(
            Rectangle((x0 * w, y0 * h), (x1 - x0) * w, (y1 - y0) * h, fill=False, color="tab:orange")
        )
        ax.text(x0 * w + 2, y0 * h - 3, f"{label} {mean.mean():.2f}", color="tab:orange", fontsize=7)
    ax.set_title("RG1_UNCR.dcm read by cvlm.xray (MONOCHROME1)", fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    out = Path(__file__).with_name("rg1_uncr.png")
    fig.savefig(out)
    print(out)


if __name__ == "__main__":
    main()
