"""Write a Triton Inference Server model repository from model bundles, for when one machine is not enough.

    python -m app.v2.triton_repository models/mnist models/fashion-mnist --out triton-models

Every graph of every bundle becomes ``<out>/<bundle>-<graph>/config.pbtxt`` and
``<out>/<bundle>-<graph>/1/model.onnx``: the ``onnxruntime_onnx`` platform, ``max_batch_size`` and
dynamic batching on. The names are the ones this service's ``/v2`` uses, so V2 clients keep working
unchanged (the PNG model, which decodes images in this service, has no Triton counterpart: send
float32 tensors to ``<bundle>-autoencoder`` there). The configuration is built as Triton's
``ModelConfig`` protobuf message and written with protobuf's text format.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from denoise_bundle import GRAPHS, BundleError, Manifest, load_manifest, verify_checksums
from denoise_bundle.manifest import GraphName

CONFIG_FILE = "config.pbtxt"
MODEL_FILE = "model.onnx"
VERSION_DIR = "1"


def model_config(
    manifest: Manifest, graph: GraphName, max_batch_size: int, max_delay_us: int
) -> model_config_pb2.ModelConfig:
    spec = manifest.graphs[graph]
    config = model_config_pb2.ModelConfig(
        name=f"{manifest.name}-{graph}", platform="onnxruntime_onnx", max_batch_size=max_batch_size
    )
    for tensors, tensor in ((config.input, spec.input), (config.output, spec.output)):
        tensors.add(name=tensor.name, data_type=model_config_pb2.TYPE_FP32, dims=[d or -1 for d in tensor.shape[1:]])
    config.dynamic_batching.max_queue_delay_microseconds = max_delay_us
    config.version_policy.latest.num_versions = 1
    config.parameters["bundle_version"].string_value = manifest.version
    return config


def write_repository(bundles: list[Path], out: Path, max_batch_size: int = 256, max_delay_us: int = 0) -> list[Path]:
    """One Triton model per graph of each bundle; returns the model folders written."""
    written = []
    for bundle in bundles:
        manifest = load_manifest(bundle)
        verify_checksums(bundle, manifest)
        for graph in GRAPHS:
            config = model_config(manifest, graph, max_batch_size, max_delay_us)
            folder = out / config.name
            (folder / VERSION_DIR).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundle / manifest.graphs[graph].file, folder / VERSION_DIR / MODEL_FILE)
            (folder / CONFIG_FILE).write_text(text_format.MessageToString(config))
            written.append(folder)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.v2.triton_repository", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundles", nargs="+", type=Path, help="bundle folders, e.g. models/mnist")
    parser.add_argument("--out", type=Path, required=True, help="the Triton model repository to write")
    parser.add_argument("--max-batch-size", type=int, default=256, help="Triton's max_batch_size (default 256)")
    parser.add_argument(
        "--max-queue-delay-us", type=int, default=0, help="dynamic batching's max_queue_delay_microseconds"
    )
    args = parser.parse_args(argv)
    try:
        written = write_repository(args.bundles, args.out, args.max_batch_size, args.max_queue_delay_us)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for folder in written:
        print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
