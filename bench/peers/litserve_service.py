"""LitServe with its request batching on and two inference workers, serving the same ONNX graph.

LitServe's endpoint takes JSON or a form, so the PNG travels as base64 in ``{"png": "..."}`` and comes
back the same way.

    LEAN_MODEL=models/mnist/autoencoder.onnx python -m bench.peers.litserve_service PORT
"""

import base64
import io
import os
import sys
from typing import Any

import litserve as ls
import numpy as np
import onnxruntime as ort
from PIL import Image

MAX_BATCH_SIZE = 64
WORKERS = 2


class Denoise(ls.LitAPI):  # type: ignore[misc]
    def setup(self, device: str) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(
            os.environ.get("LEAN_MODEL", "models/mnist/autoencoder.onnx"), options, providers=["CPUExecutionProvider"]
        )

    def decode_request(self, request: dict[str, Any]) -> np.ndarray:
        data = base64.b64decode(request["png"])
        return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32) / 255.0

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)[..., None]

    def predict(self, x: np.ndarray) -> np.ndarray:
        (output,) = self.session.run(None, {"image": x})
        return np.asarray(output)

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output[..., 0])

    def encode_response(self, output: np.ndarray) -> dict[str, str]:
        buffer = io.BytesIO()
        Image.fromarray((np.clip(output, 0, 1) * 255 + 0.5).astype(np.uint8)).save(buffer, format="PNG")
        return {"png": base64.b64encode(buffer.getvalue()).decode("ascii")}


def main() -> None:
    api = Denoise(max_batch_size=MAX_BATCH_SIZE, batch_timeout=0.001)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=WORKERS, timeout=30)
    server.run(
        port=int(sys.argv[1]),
        host="127.0.0.1",
        num_api_servers=WORKERS,
        log_level="warning",
        generate_client_file=False,
    )


if __name__ == "__main__":
    main()
