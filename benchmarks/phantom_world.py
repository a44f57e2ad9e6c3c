"""Time and memory of writing a phantom world; prints measured numbers.

Usage:
    python benchmarks/phantom_world.py [--n 2000] [--size 128] [--workers 2] [--out DIR]

Peak RSS is reported for the main process and for the largest worker (``getrusage``), so the number
shows whether memory grows with ``n`` (it should not: the writer streams).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

from cvlm.phantoms.world import write_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None, help="keep the world here (default: a temp dir)")
    args = parser.parse_args()

    tmp = None if args.out else Path(tempfile.mkdtemp(prefix="cvlm-world-"))
    out = args.out or tmp / "world"
    try:
        start = time.perf_counter()
        write_world(out, n=args.n, seed=args.seed, size=args.size, workers=args.workers)
        seconds = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "n": args.n,
        "size": args.size,
        "workers": args.workers,
        "seconds": round(seconds, 2),
        "images_per_second": round(args.n / seconds, 1),
        "peak_rss_main_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_largest_worker_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "world_size_mb": round(size_mb, 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
