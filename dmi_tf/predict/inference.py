"""A run's answers for batches of raw-id histories, as the export computes them.

The run is restored from its directory alone (``config.yaml``, ``vocabulary.txt``,
``checkpoints/``; its data folder is not read). Raw ids become rows through the
tables of ``dmi_tf.raw_ids`` built from the run's vocabulary, the answers come from
``dmi_tf.answers`` with the exact index the export builds by default
(``dmi_tf.index.build_index``, which calls ``dmi_tf.retrieval.retrieve``), and DMI's
refiner is folded as for the export: a history gets the ``topk`` the exported
version serves for it.
"""

from __future__ import annotations

import tempfile

import numpy as np
import tensorflow as tf

from dmi_tf import answers, raw_ids, runs
from dmi_tf.data.dataset import SplitData
from dmi_tf.errors import UserError
from dmi_tf.index import IndexConfig, build_index

#: What ``--outputs`` may ask for, and the arrays each adds to a shard (the exported
#: signatures' output names): ``items`` writes the item table once instead.
OUTPUTS = {
    "topk": ("item_ids", "scores"),
    "interests": ("interests", "coarse_interests"),
    "explain": ("items", "weights"),
    "items": (),
}
KNOWN_IDS = "known_ids"


class Predictor:
    """Answers for histories of raw ids.

    Args:
      run_dir: a ``python -m dmi_tf.train`` run with a checkpoint.
      k: items per user of ``topk`` (1 ... the run's item count).
      outputs: keys of :data:`OUTPUTS`.

    Raises:
      UserError: not a run, a model without a user tower, a bad ``k`` or output.
    """

    def __init__(self, run_dir: str, k: int = 50, outputs=("topk",)):
        unknown = [o for o in outputs if o not in OUTPUTS]
        if unknown or not outputs:
            raise UserError(f"--outputs {','.join(outputs)!r}: choose from {', '.join(OUTPUTS)}")
        self.config, self.vocabulary = runs.read_run(run_dir)
        if self.config.model.name in runs.UNTRAINED:
            raise UserError(f"run {run_dir!r} is a {self.config.model.name} baseline: it has no "
                            "user tower or item embeddings to predict with; use the run of a "
                            "trained embedding model (youtube_dnn, mind, comirec_dr, comirec_sa, "
                            "dmi)")
        num_items = len(self.vocabulary)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_items - 1:
            raise UserError(f"--k {k}: must be between 1 and the {num_items - 1} items of the run")
        self.model, self.checkpoint = runs.restore_model(
            run_dir, self.config, num_items, SplitData.from_sequences([], []))
        self.model.fold_for_inference()  # as the export does: same answers, less work
        self.k, self.outputs = k, tuple(outputs)
        self.index = build_index(self.model.candidate_embeddings(), IndexConfig(), k) \
            if "topk" in outputs else None
        with tempfile.TemporaryDirectory() as scratch:  # eager tables read the file at once
            path = raw_ids.write_vocabulary_file(self.vocabulary, scratch)
            self._row_of, self._id_of = raw_ids.lookup_tables(path, num_items)
        spec = [tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.int32)]
        self._answer = tf.function(self._answers, input_signature=spec)

    def item_table(self) -> np.ndarray:
        """The item table float32 ``[M, d]`` as retrieval scores it (row 0 padding)."""
        return np.asarray(tf.convert_to_tensor(self.model.candidate_embeddings()), np.float32)

    def __call__(self, histories: list[list[str]]) -> dict[str, np.ndarray]:
        """Histories (raw ids, oldest first; "" and unknown ids ignored) -> arrays ``[B, ...]``.

        Always ``known_ids`` int32 ``[B]``; then per output: ``item_ids`` str ``[B, k]`` and
        ``scores`` float32 ``[B, k]`` (``""`` / ``-inf`` in empty slots); ``interests``
        and ``coarse_interests`` float32 ``[B, K, d]``; ``items`` str ``[B, K, L]`` and
        ``weights`` float32 ``[B, K, L]``.
        """
        flat = [raw for history in histories for raw in history]
        lengths = np.fromiter(map(len, histories), np.int32, len(histories))
        out = self._answer(tf.constant(flat, tf.string, shape=[len(flat)]), tf.constant(lengths))
        return {name: _numpy(value) for name, value in out.items()}

    def _answers(self, ids, lengths):
        rows, known = raw_ids.ragged_history_rows(self._row_of, ids, lengths,
                                                  self.config.data.max_length)
        out = {KNOWN_IDS: known}
        if "topk" in self.outputs:
            out["item_ids"], out["scores"] = answers.topk(self.model, self.index, self._id_of,
                                                          rows, self.k)
        if "interests" in self.outputs:
            out["interests"], out["coarse_interests"] = answers.interests(self.model, rows)
        if "explain" in self.outputs:
            out["items"], out["weights"] = answers.explain(self.model, self._id_of, rows)
        return out


def _numpy(tensor: tf.Tensor) -> np.ndarray:
    value = tensor.numpy()
    if value.dtype == object:  # raw ids: bytes -> str
        return np.char.decode(value.astype(np.bytes_), "utf-8") if value.size else \
            value.astype(str)
    return value
