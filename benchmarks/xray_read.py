"""Reading speed of cvlm.xray, and the cost of the image metrics, on this machine.

Run: ``PYTHONPATH=src python benchmarks/xray_read.py [--seconds 3]``. Prints images per second
(single process, single thread) for:

* 128x128 8-bit JPEGs (the phantom world's format) and 16-bit PNGs;
* the 1955x1841 15-bit CR chest ``RG1_UNCR.dcm`` (pydicom-data), uncompressed and JPEG 2000;
* ``to_imagenet_tensor`` of one 1955x1841 image, and ``ssim`` / ``psnr`` on 128x128 pairs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from pydicom.data import get_testdata_file

from cvlm.metrics import psnr, ssim
from cvlm.xray import read_xray, to_imagenet_tensor, write_jpeg, write_png


def rate(fn: Callable[[int], object], n_items: int, seconds: float) -> float:
    """Calls per second of ``fn(i)`` over at least ``seconds`` (after one warm-up call)."""
    fn(0)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(calls % n_items)
        calls += 1
    return calls / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"cpu cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()}")

    with tempfile.TemporaryDirectory() as tmp:
        images = [rng.random((128, 128)).astype(np.float32) for _ in range(64)]
        jpgs = [write_jpeg(img, Path(tmp) / f"{i}.jpg") for i, img in enumerate(images)]
        pngs = [write_png(img, Path(tmp) / f"{i}.png", bits=16) for i, img in enumerate(images)]
        r = rate(lambda i: read_xray(jpgs[i]), len(jpgs), args.seconds)
        print(f"read 128x128 JPEG:        {r:8.1f} images/s")
        r = rate(lambda i: read_xray(pngs[i]), len(pngs), args.seconds)
        print(f"read 128x128 16-bit PNG:  {r:8.1f} images/s")

    for name in ("RG1_UNCR.dcm", "RG1_J2KR.dcm"):
        path = get_testdata_file(name)
        r = rate(lambda _i, p=path: read_xray(p), 1, args.seconds)
        print(f"read 1955x1841 {name}: {r:8.2f} images/s ({1000 / r:.0f} ms each)")

    big = read_xray(get_testdata_file("RG1_UNCR.dcm"))
    r = rate(lambda _i: to_imagenet_tensor(big), 1, args.seconds)
    print(f"to_imagenet_tensor 1955x1841 -> 224: {r:8.1f} images/s")

    pairs = [(rng.random((128, 128)), rng.random((128, 128))) for _ in range(16)]
    r = rate(lambda i: ssim(*pairs[i]), len(pairs), args.seconds)
    print(f"ssim 128x128:             {r:8.1f} pairs/s")
    r = rate(lambda i: psnr(*pairs[i]), len(pairs), args.seconds)
    print(f"psnr 128x128:             {r:8.1f} pairs/s")


if __name__ == "__main__":
    main()
