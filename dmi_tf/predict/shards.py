"""The output folder of batch inference: numbered shards written atomically, and a manifest.

``OUT/predict.json`` records what is being computed (run, checkpoint, input file,
k, outputs, shard size); ``OUT/part-00000.npz`` (or ``.parquet``), ``part-00001``,
... each hold the answers of ``shard_users`` consecutive users of the input,
in input order. A shard is written under a hidden temporary name and renamed
into place when complete, so a shard file is always whole: a killed run is
resumed by computing the shards that are missing, and nothing is duplicated or
lost. The manifest gets ``complete: true`` (and the user count and speed) at the end.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from dmi_tf.errors import UserError
from dmi_tf.io_utils import atomic_write, atomic_write_text

MANIFEST = "predict.json"
SHARD_FORMATS = ("npz", "parquet")
_SHARD = re.compile(r"^part-(\d{5,})\.(npz|parquet)$")
_TEMPORARY = re.compile(r"^\.part-\d{5,}\..*\.tmp$")


def shard_name(index: int, shard_format: str) -> str:
    return f"part-{index:05d}.{shard_format}"


class ShardFolder:
    """``OUT``: its manifest, its complete shards, and atomic shard writes.

    Args:
      out_dir: the folder (created if missing).
      settings: what the shards are answers to; a folder holding another
        computation's manifest is refused, one holding the same is resumed.
      shard_format: ``npz`` (NumPy) or ``parquet`` (needs ``pyarrow``).

    Raises:
      UserError: ``out_dir`` is a file, holds files but no manifest, or another
        computation's; parquet without pyarrow.
    """

    def __init__(self, out_dir: str, settings: dict, shard_format: str = "npz"):
        if shard_format not in SHARD_FORMATS:
            raise UserError(f"--shard-format {shard_format!r}: use one of "
                            f"{', '.join(SHARD_FORMATS)}")
        if shard_format == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise UserError("--shard-format parquet needs pyarrow: pip install pyarrow "
                                "(or the package's [parquet] extra), or use npz") from None
        if os.path.isfile(out_dir):
            raise UserError(f"--out {out_dir!r} is a file; give a folder for the shards")
        self.out_dir, self.format = out_dir, shard_format
        self.settings = {**settings, "shard_format": shard_format}
        os.makedirs(out_dir, exist_ok=True)
        manifest = self.manifest()
        if manifest is None:
            if os.listdir(out_dir):
                raise UserError(f"--out {out_dir!r} is not empty and holds no {MANIFEST}; "
                                "choose a new or empty folder")
            self._write_manifest(self.settings)
        else:
            differences = [f"{key}: {manifest.get(key)!r} there, {value!r} here"
                           for key, value in self.settings.items() if manifest.get(key) != value]
            if differences:
                raise UserError(f"--out {out_dir!r} holds the output of another prediction "
                                f"({'; '.join(differences[:3])}); choose a new --out, or give "
                                "the same arguments to resume it")
        for name in os.listdir(out_dir):  # left by a killed run
            if _TEMPORARY.match(name):
                os.remove(os.path.join(out_dir, name))
        self.complete_shards = {int(m.group(1)) for m in map(_SHARD.match, os.listdir(out_dir))
                                if m and m.group(2) == shard_format}

    def manifest(self) -> dict | None:
        path = os.path.join(self.out_dir, MANIFEST)
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def finished(self) -> bool:
        return bool((self.manifest() or {}).get("complete"))

    def write(self, index: int, columns: dict[str, np.ndarray]) -> None:
        """Writes shard ``index`` (``columns``: equally long arrays) atomically."""
        def write(f):
            if self.format == "npz":
                np.savez(f, **columns)
            else:
                _write_parquet(f, columns)

        atomic_write(os.path.join(self.out_dir, shard_name(index, self.format)), write)
        self.complete_shards.add(index)

    def finish(self, summary: dict) -> None:
        self._write_manifest({**self.settings, **summary, "complete": True})

    def _write_manifest(self, content: dict) -> None:
        atomic_write_text(os.path.join(self.out_dir, MANIFEST),
                          json.dumps(content, indent=2) + "\n")


def read_shards(out_dir: str) -> dict[str, np.ndarray]:
    """Every NumPy shard of ``out_dir``, in order, concatenated column by column."""
    names = sorted(n for n in os.listdir(out_dir) if (m := _SHARD.match(n)) and
                   m.group(2) == "npz")
    parts = []
    for name in names:
        with np.load(os.path.join(out_dir, name)) as shard:
            parts.append({key: shard[key] for key in shard.files})
    return {key: np.concatenate([p[key] for p in parts]) for key in (parts[0] if parts else {})}


def _write_parquet(f, columns: dict[str, np.ndarray]) -> None:
    """One row per user; an array column ``[n, a, b]`` becomes nested fixed-size lists."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def column(values: np.ndarray):
        array = pa.array(values.reshape(-1))
        for size in reversed(values.shape[1:]):
            array = pa.FixedSizeListArray.from_arrays(array, size)
        return array

    pq.write_table(pa.table({key: column(values) for key, values in columns.items()}), f)
