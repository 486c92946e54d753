"""In-memory datasets: raw interaction logs and processed, split sequence data.

A raw log is what a reader returns: interactions in file order with raw string
ids. A processed :class:`Dataset` is what ``prepare`` returns and what
training reads: item indices ``1..N`` (0 is padding), one time-ordered sequence
per user, split into train, valid and test: by user (the protocol's split), or
by time (``dmi_tf.data.time_split``: train before a cut-off, valid and test
users judged on the windows after it, so a user may appear in several splits).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class RawLog:
    """Interactions in file order, with raw ids as strings.

    Attributes:
      users: raw user ids, one per interaction.
      items: raw item ids, one per interaction.
      timestamps: float64 ``[n]``; readers without a time column use the line order.
      source: where the log came from (a path), for error messages.
    """

    users: list[str]
    items: list[str]
    timestamps: np.ndarray
    source: str = "<memory>"

    def __len__(self) -> int:
        return len(self.items)


@dataclasses.dataclass
class SplitData:
    """The users of one split and their item sequences, in CSR form.

    Attributes:
      user_ids: int64 ``[U]``, the processed user ids.
      row_splits: int64 ``[U + 1]``; user ``u``'s items are
        ``items[row_splits[u]:row_splits[u+1]]``.
      items: int64 ``[total]``, item indices in ``1..N``, each user's in time order.
      timestamps: float64 ``[total]`` or None when the source had no time column.
      history_lengths: int64 ``[U]`` or None. Where each evaluated user's history
        ends: items ``[0, h)`` are the history, the rest the targets (a time split's
        window start). None: the protocol's cut, the first 80% of each sequence.
    """

    user_ids: np.ndarray
    row_splits: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None = None
    history_lengths: np.ndarray | None = None

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_interactions(self) -> int:
        return len(self.items)

    def lengths(self) -> np.ndarray:
        return np.diff(self.row_splits)

    def sequence(self, u: int) -> np.ndarray:
        return self.items[self.row_splits[u] : self.row_splits[u + 1]]

    @classmethod
    def from_sequences(cls, user_ids, sequences, timestamps=None) -> SplitData:
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        row_splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        items = (np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
                 if len(sequences) else np.zeros([0], np.int64))
        ts = None
        if timestamps is not None:
            ts = (np.concatenate([np.asarray(t, dtype=np.float64) for t in timestamps])
                  if len(timestamps) else np.zeros([0], np.float64))
        return cls(np.asarray(user_ids, dtype=np.int64), row_splits, items, ts)


@dataclasses.dataclass
class Dataset:
    """A processed dataset: three splits over one item vocabulary.

    The splits are user-disjoint unless valid and test carry ``history_lengths``
    (a time split: the same user trains on its past and is judged on a later window).

    Attributes:
      train, valid, test: the splits.
      vocabulary: raw item id of each index; ``vocabulary[0] == ""`` is padding,
        so ``len(vocabulary) == num_items``.
      name: a short name for logs and tables.
      item_categories: int64 ``[num_items]``, the category of each item index
        (-1 unknown, and for padding), or None; used by the diversity metric and
        ComiRec's controllable aggregation.
    """

    train: SplitData
    valid: SplitData
    test: SplitData
    vocabulary: list[str]
    name: str = "dataset"
    item_categories: np.ndarray | None = None

    @property
    def num_items(self) -> int:
        """Size of the item table, padding row 0 included."""
        return len(self.vocabulary)

    def summary(self) -> str:
        s = [f"{self.name}: {self.num_items - 1:,} items"]
        for split_name in ("train", "valid", "test"):
            split = getattr(self, split_name)
            s.append(f"{split_name} {split.num_users:,} users / "
                     f"{split.num_interactions:,} interactions")
        return ", ".join(s)
