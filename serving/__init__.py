"""Serving a dmi-tf export over TensorFlow Serving's gRPC and REST APIs.

- ``serving.contract``: the names, files and statuses the export, the server
  and the clients share (it imports nothing; ``export`` imports it too).
- ``serving.client``: ``TopKClient`` (gRPC) and ``RestTopKClient`` (REST), and
  ``python -m serving.client``.
- ``serving.server``: a local stand-in for TF-Serving (``python -m serving.server``)
  for development, tests and ScaNN exports; not TF-Serving itself.

This package never imports ``dmi_tf`` or ``export``: it speaks only the
TF-Serving API and loads SavedModels, so a client can be installed and tested
alone. This file imports nothing, so ``import serving.contract`` stays light.
"""
