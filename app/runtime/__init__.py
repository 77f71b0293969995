"""Model runtime: the only package that imports onnxruntime.

``providers`` picks execution providers, ``registry`` loads and verifies bundles,
``batcher`` merges concurrent requests into one ONNX Runtime call.
"""

import os

# onnxruntime (1.29 and later) sends usage telemetry unless this is set before it is imported; a
# service runs inside its operator's network and stays quiet. Set ORT_TELEMETRY_DISABLED=0 to allow it.
os.environ.setdefault("ORT_TELEMETRY_DISABLED", "1")
