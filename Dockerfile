# Two targets: `cpu` (default, python slim) and `gpu` (CUDA 12 + cuDNN 9 runtime, onnxruntime-gpu).
# Serving dependencies only (no training stack). The committed models are baked in at /srv/models;
# mount a volume there to serve others.
ARG PYTHON_IMAGE=python:3.11-slim
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS gpu
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv $VIRTUAL_ENV
WORKDIR /srv
COPY pyproject.toml README.md deploy/install.sh ./
RUN sh install.sh deps gpu
COPY denoise_bundle denoise_bundle
COPY app app
RUN sh install.sh app
COPY models models
RUN useradd --system --uid 10001 --no-create-home denoise
USER 10001
# HOME on /tmp (the one writable place when the root filesystem is read-only) for onnxruntime's cache.
ENV HOME=/tmp
ENV DENOISE_HOST=0.0.0.0 DENOISE_PORT=8000 DENOISE_MODEL_DIR=/srv/models DENOISE_PROVIDERS=cuda
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 CMD ["python", "-m", "app.healthcheck"]
STOPSIGNAL SIGTERM
CMD ["denoise-serve"]

FROM ${PYTHON_IMAGE} AS cpu
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv $VIRTUAL_ENV
WORKDIR /srv
COPY pyproject.toml README.md deploy/install.sh ./
RUN sh install.sh deps cpu
COPY denoise_bundle denoise_bundle
COPY app app
RUN sh install.sh app
COPY models models
RUN useradd --system --uid 10001 --no-create-home denoise
USER 10001
# HOME on /tmp (the one writable place when the root filesystem is read-only) for onnxruntime's cache.
ENV HOME=/tmp
ENV DENOISE_HOST=0.0.0.0 DENOISE_PORT=8000 DENOISE_MODEL_DIR=/srv/models DENOISE_PROVIDERS=cpu
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["python", "-m", "app.healthcheck"]
STOPSIGNAL SIGTERM
CMD ["denoise-serve"]
