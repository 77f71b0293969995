"""Offline pipeline: MNIST-like data -> blind denoising autoencoder -> ONNX model bundle.

Nothing here runs at import; ``python -m training --help`` is the entry point.
"""
