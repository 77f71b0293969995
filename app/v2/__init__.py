"""The Open Inference Protocol (KServe "V2"): a front door over the same models, batchers and limits.

- :mod:`app.v2.catalog`: which V2 models the loaded bundles offer, and their metadata and config.
- :mod:`app.v2.tensors`: tensors in and out of the REST body (JSON data, binary tensor data).
- :mod:`app.v2.inference`: a V2 inference request run through the service's batchers.
- :mod:`app.v2.rest`: the ``/v2`` routes; :mod:`app.v2.grpc`: the gRPC service.
"""
