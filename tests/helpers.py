"""Test inputs shared by the extractor tests."""

import numpy as np


def masked_history(seed=0, batch=4, length=6, d=4):
    """Random history embeddings ``[batch, L, d]`` and a mask with users of 3, 1, 5 and L items."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, length, d)).astype(np.float32)
    mask = np.ones((batch, length), bool)
    for user, real in enumerate([3, 1, 5][:batch]):
        mask[user, real:] = False
    return x, mask
