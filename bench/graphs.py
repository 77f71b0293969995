"""Per-image cost of a bundle's float32 and int8 autoencoders, in-process on one thread (no HTTP).

    python -m bench.graphs models/mnist [--threads 1] [--seconds 2]

One thread per session is how the service runs them (one worker per core).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.load import in_process  # noqa: E402
from denoise_bundle import load_manifest  # noqa: E402

BATCHES = (1, 8, 64)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    manifest = load_manifest(args.bundle)
    graphs = {"float32": manifest.graphs["autoencoder"].file}
    if manifest.int8 is not None:
        graphs["int8"] = manifest.int8.graph.file
    micros = {
        name: [1e6 / in_process(args.bundle / file, batch, args.seconds, args.threads) for batch in BATCHES]
        for name, file in graphs.items()
    }
    sizes = " / ".join(map(str, BATCHES))
    print(f"{manifest.name} {manifest.version}, µs per image on {args.threads} thread(s), batch {sizes}")
    for name, values in micros.items():
        print(f"  {name:8s}" + " / ".join(f"{v:.0f}" for v in values))
    if "int8" in micros:
        ratios = (f / i for f, i in zip(micros["float32"], micros["int8"], strict=True))
        print("  speed-up " + " / ".join(f"{r:.2f}x" for r in ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
