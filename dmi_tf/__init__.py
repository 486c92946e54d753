"""dmi-tf: Diffusion Multi-Interest retrieval (DMI) and its baselines in TensorFlow.

TensorFlow Recommenders needs Keras 2 (``tf_keras``). The switch has to be made
before TensorFlow is first imported, so it lives here, before any TF import
anywhere in the package.
"""

import os
import warnings

__version__ = "0.1.0"

_LEGACY_KERAS = "TF_USE_LEGACY_KERAS"

if os.environ.get(_LEGACY_KERAS) is None:
    os.environ[_LEGACY_KERAS] = "1"
elif os.environ[_LEGACY_KERAS] not in ("1", "true", "True"):
    # Respect an explicit user choice, but say what it will break.
    warnings.warn(
        f"{_LEGACY_KERAS}={os.environ[_LEGACY_KERAS]!r} is set; TensorFlow Recommenders "
        "needs Keras 2. Unset it or set it to 1, before TensorFlow is imported.",
        stacklevel=2,
    )
# TensorFlow's C++ start-up chatter (CUDA stubs, oneDNN notes) hides the
# progress output users look for; errors still come through.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
