"""Model runtime: the only package that imports onnxruntime.

``providers`` picks execution providers, ``registry`` loads and verifies bundles,
``batcher`` merges concurrent requests into one ONNX Runtime call.
"""
