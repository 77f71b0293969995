"""denoise: a REST service that removes noise from 28x28 grayscale images with ONNX Runtime."""

__version__ = "1.0.0"
