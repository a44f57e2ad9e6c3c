"""Reports per second of each bundled generator on the CPU (default 2 threads), on phantom images.

python benchmarks/generators_speed.py [--n 64] [--threads 2] [--batch-size 32]
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from cvlm.bundled import bundled_names
from cvlm.generators import load_generator
from cvlm.phantoms.world import write_world
from cvlm.xray import read_xray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="images")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_world(Path(tmp) / "world", n=args.n, seed=99, workers=1)
        images = [read_xray(p) for p in sorted(root.rglob("files/**/*.jpg"))]
    print(f"{len(images)} phantom images, {args.threads} CPU threads, batch {args.batch_size}")
    for name in bundled_names("generators"):
        g = load_generator(name, device="cpu")
        g.batch_size = args.batch_size
        g.generate(images[:2])  # warm-up
        start = time.perf_counter()
        reports = g.generate(images)
        seconds = time.perf_counter() - start
        words = sum(len(r.split()) for r in reports) / len(reports)
        line = f"{name:20s} {len(images) / seconds:7.1f} reports/s  ({words:.0f} words per report)"
        if g.supports_attention:
            start = time.perf_counter()
            g.generate_with_attention(images)
            line += f"; with attention maps {len(images) / (time.perf_counter() - start):.1f} reports/s"
        print(line)


if __name__ == "__main__":
    main()
