"""What the PNG codec leaves of the in-process ceiling for a batch of PNGs:
``python -m bench.codec_floor [--images 256] [--rounds 3] [--seconds 3] [--threads N]``.

A multipart ``/denoise`` of N PNGs decodes N uploads and encodes N outputs around its inference;
``bench.run`` sets its images/s against the in-process ceiling, the served graph alone at batch N on
every core. This measures, in one process and alternating rounds, the same ceiling (images/s, on
``--threads`` threads, by default one per core) and the service's own PNG codec (``app/imaging.py``)
on what such a request carries: N copies of the sample ``bench.run`` sends, decoded, and the graph's
outputs for them, encoded (CPU µs per image, on one thread, with nothing else running).

It prints, per round and as the median, the highest fraction of the ceiling a request that decodes
and encodes its PNGs could reach if the codec's work were spread over the same cores and the request
did nothing else: ``1 / (1 + codec CPU per image × ceiling images/s / cores)``. Under load the codec
shares the cores with the graph and costs more than alone, so a service stays below this bound.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from app.imaging import DecodeOptions, decode, encode_png, to_model_input, to_pixels  # noqa: E402
from bench.load import SAMPLE, in_process  # noqa: E402
from bench.services import served_graph  # noqa: E402


def _cpu_us_per_image(work: Callable[[], object], images: int, seconds: float) -> float:
    """CPU µs per image of ``work`` (over ``images`` images), repeated for about ``seconds``."""
    work()
    runs, started, wall = 0, time.process_time(), time.perf_counter()
    while runs == 0 or time.perf_counter() - wall < seconds:
        work()
        runs += 1
    return (time.process_time() - started) / (runs * images) * 1e6


def codec_us_per_image(graph: Path, images: int, seconds: float) -> tuple[float, float]:
    """CPU µs per image to decode ``images`` copies of the sample, and to encode ``graph``'s outputs for them."""
    uploads = [SAMPLE.read_bytes()] * images
    options = DecodeOptions()
    pixels = np.stack([decode(data, options) for data in uploads])
    one_thread = ort.SessionOptions()
    one_thread.intra_op_num_threads = 1
    session = ort.InferenceSession(str(graph), one_thread, providers=["CPUExecutionProvider"])
    outputs = to_pixels(session.run(None, {session.get_inputs()[0].name: to_model_input(pixels)})[0])
    decoding = _cpu_us_per_image(lambda: [decode(data, options) for data in uploads], images, seconds / 2)
    encoding = _cpu_us_per_image(lambda: [encode_png(image) for image in outputs], images, seconds / 2)
    return decoding, encoding


def bound(ceiling: float, codec_us: float, cores: int) -> float:
    """The fraction of ``ceiling`` (images/s) left once every image also costs ``codec_us`` of CPU over ``cores``."""
    return 1 / (1 + codec_us * 1e-6 * ceiling / cores)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="the ceiling's threads (cores)")
    args = parser.parse_args()
    if args.seconds <= 0 or args.images < 1 or args.rounds < 1 or args.threads < 1:
        parser.error("--seconds must be above 0, and --images, --rounds and --threads at least 1")
    graph = served_graph()
    print(f"{graph.name}; {args.images} images of {SAMPLE.name} per request; cores: {args.threads}")
    bounds = []
    for number in range(args.rounds):
        ceiling = in_process(graph, args.images, args.seconds, args.threads)
        decoding, encoding = codec_us_per_image(graph, args.images, args.seconds)
        bounds.append(bound(ceiling, decoding + encoding, args.threads))
        print(
            f"round {number + 1}: ceiling {ceiling:.0f} images/s ({args.threads / ceiling * 1e6:.1f} µs of CPU per"
            f" image); PNG decode {decoding:.1f} µs, encode {encoding:.1f} µs per image; bound {bounds[-1]:.1%}",
            flush=True,
        )
    print(f"the codec's bound: {statistics.median(bounds):.1%} of the in-process ceiling (median of the rounds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
