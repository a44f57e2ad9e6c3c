"""What the FID-like score of ``cvlm validate`` measures: its small-N bias and its response to changes.

Features: ``cvlm.generators.image_features`` of a bundled generator (default phantom-templater), on the
images of a phantom world resized to the diffusion model's 128 px. Prints

1. the distance between two disjoint random samples of real images for several N (mean and standard
   deviation over repeats): the floor that sampling alone gives, shrinking roughly like 1/N;
2. at N images, the distance of real images to degraded copies of themselves (Gaussian blur, noise) and
   between chests with no finding and chests with findings, next to that floor.

python benchmarks/fid_calibration.py --data WORLD [--n 32] [--features phantom-templater] [--repeats 10]
"""

import argparse
import time

import numpy as np
import torch
from scipy import ndimage

from cvlm.data import load_dataset
from cvlm.generators import image_features, load_generator
from cvlm.metrics import frechet_distance
from cvlm.xray import read_xray, resize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="phantom world (truth.jsonl)")
    parser.add_argument("--n", type=int, default=32, help="images per set in part 2")
    parser.add_argument("--features", default="phantom-templater")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--max-images", type=int, default=512)
    parser.add_argument("--size", type=int, default=128, help="the diffusion model's image size")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    records = load_dataset(args.data, views=None)[: args.max_images]
    images = np.stack([resize(read_xray(r.image_path), args.size) for r in records])
    normal = np.array([not r.true_findings for r in records])
    extractor = load_generator(args.features, device="cpu")
    start = time.perf_counter()
    feats = image_features(extractor, images)
    seconds = time.perf_counter() - start
    print(
        f"{len(images)} images of {args.data} at {args.size} px, features {args.features} {feats.shape[1]}-D"
    )
    print(f"feature extraction: {1000 * seconds / len(images):.2f} ms per image (1 thread)\n")

    print("1. two disjoint random samples of real images (N vs N)")
    for n in (8, 16, 32, 64, 128, 256):
        if 2 * n > len(feats):
            break
        values = []
        for _ in range(args.repeats):
            order = rng.permutation(len(feats))
            values.append(frechet_distance(feats[order[:n]], feats[order[n : 2 * n]]))
        print(f"   N = {n:3d}: {np.mean(values):.4f} +- {np.std(values):.4f}")

    n = args.n
    print(f"\n2. at N = {n} (mean +- sd over {args.repeats} random sets)")
    changes = {
        "real vs other real (floor)": lambda x, other: other,
        "halves N/2 vs N/2 (fid_reference)": None,
        "blur sigma 0.5 px": lambda x, other: ndimage.gaussian_filter(x, (0, 0.5, 0.5)),
        "blur sigma 1 px": lambda x, other: ndimage.gaussian_filter(x, (0, 1, 1)),
        "blur sigma 2 px": lambda x, other: ndimage.gaussian_filter(x, (0, 2, 2)),
        "noise sd 0.02": lambda x, other: np.clip(x + rng.normal(0, 0.02, x.shape), 0, 1),
        "noise sd 0.05": lambda x, other: np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1),
    }
    for name, change in changes.items():
        values = []
        for _ in range(args.repeats):
            order = rng.permutation(len(feats))
            a, b = order[:n], order[n : 2 * n]
            if change is None:
                values.append(frechet_distance(feats[a[0::2]], feats[a[1::2]]))
                continue
            changed = change(images[a], images[b]).astype(np.float32)
            values.append(frechet_distance(feats[a], image_features(extractor, changed)))
        print(f"   {name:36s} {np.mean(values):.4f} +- {np.std(values):.4f}")
    values = []
    for _ in range(args.repeats):
        a = rng.choice(np.flatnonzero(normal), n, replace=False)
        b = rng.choice(np.flatnonzero(~normal), n, replace=False)
        values.append(frechet_distance(feats[a], feats[b]))
    print(f"   {'no finding vs with findings':36s} {np.mean(values):.4f} +- {np.std(values):.4f}")
    print(f"   ({normal.sum()} of {len(normal)} images have no finding)")


if __name__ == "__main__":
    main()
