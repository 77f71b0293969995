"""Triton Inference Server with dynamic batching, through PyTriton: a Python model that takes the PNG as a
``BYTES`` tensor, runs onnxruntime and returns PNG bytes. Triton's Python stub needs the interpreter's
``libpython`` directory on ``LD_LIBRARY_PATH`` (the bench sets it).

    LEAN_MODEL=models/mnist/autoencoder.onnx python -m bench.peers.triton_service HTTP_PORT GRPC_PORT METRICS_PORT
"""

from __future__ import annotations

import io
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

MODEL_NAME = "denoise"
MAX_BATCH_SIZE = 64

options = ort.SessionOptions()
options.intra_op_num_threads = 2
session = ort.InferenceSession(
    os.environ.get("LEAN_MODEL", "models/mnist/autoencoder.onnx"), options, providers=["CPUExecutionProvider"]
)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@batch  # type: ignore[untyped-decorator]
def infer(png: np.ndarray) -> dict[str, np.ndarray]:
    images = np.stack(
        [np.asarray(Image.open(io.BytesIO(bytes(item[0]))).convert("L"), dtype=np.float32) / 255.0 for item in png]
    )
    (output,) = session.run(None, {"image": images[..., None]})
    return {"denoised_png": np.array([[_png(image[:, :, 0])] for image in output], dtype=np.object_)}


def main() -> None:
    http_port, grpc_port, metrics_port = (int(arg) for arg in sys.argv[1:4])
    config = TritonConfig(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port)
    with Triton(config=config) as triton:
        triton.bind(
            model_name=MODEL_NAME,
            infer_func=infer,
            inputs=[Tensor(name="png", dtype=np.bytes_, shape=(1,))],
            outputs=[Tensor(name="denoised_png", dtype=np.bytes_, shape=(1,))],
            config=ModelConfig(max_batch_size=MAX_BATCH_SIZE, batcher=DynamicBatcher(max_queue_delay_microseconds=0)),
        )
        triton.serve()


if __name__ == "__main__":
    main()
