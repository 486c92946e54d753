"""The configured dataset: a split folder (``data.path``), or the built-in synthetic data."""

from __future__ import annotations

from dmi_tf.config import Config
from dmi_tf.data.dataset import Dataset
from dmi_tf.data.splits import load_dataset
from dmi_tf.data.synthetic import synthetic_dataset


def load_data(config: Config) -> Dataset:
    """The dataset ``config.data`` names: ``data.path``'s split folder, or synthetic when null."""
    if config.data.path is None:
        dataset, _ = synthetic_dataset(config.data.synthetic)
        return dataset
    return load_dataset(config.data.path)
