"""dmi_tf.io_utils: files and folders published for other processes get ordinary permissions."""

import contextlib
import os
import stat

import pytest

from dmi_tf.data.dataset import Dataset, SplitData
from dmi_tf.data.splits import write_dataset
from dmi_tf.io_utils import atomic_write_text, published_directory


@contextlib.contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_published_files_get_the_permissions_the_umask_gives(tmp_path, mask):
    # models.config, batching_parameters.txt, a run's config.yaml, metrics.json and
    # vocabulary.txt are written through atomic_write_text; they were 0600 (mkstemp), which a
    # TF-Serving container running as another user cannot read.
    with umask(mask):
        atomic_write_text(tmp_path / "models.config", "model_config_list {}\n")
        with published_directory(tmp_path / "1", ".1.partial-") as folder:
            atomic_write_text(os.path.join(folder, "export.json"), "{}\n")
        split = SplitData.from_sequences([0], [[1, 2, 1]])
        write_dataset(Dataset(split, split, split, ["", "a", "b"]), tmp_path / "data")
    assert mode(tmp_path / "models.config") == 0o666 & ~mask
    assert mode(tmp_path / "1") == 0o777 & ~mask
    assert mode(tmp_path / "1" / "export.json") == 0o666 & ~mask
    assert mode(tmp_path / "data") == 0o777 & ~mask
    assert {mode(p) for p in (tmp_path / "data").iterdir()} == {0o666 & ~mask}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
