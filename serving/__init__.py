"""gRPC/REST clients for TF-Serving and a local PredictionService (``python -m serving.client``).

Not implemented yet. This package never imports ``dmi_tf``: it speaks only the
TF-Serving API, so a client can be installed and tested alone.
"""
