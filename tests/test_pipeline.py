import numpy as np

from dmi_tf.data.dataset import SplitData
from dmi_tf.data.pipeline import evaluation_arrays, evaluation_dataset, training_dataset


def split():
    # Item ids encode (user, position) so every sample can be checked against its source.
    lengths = [5, 12, 30, 7]
    seqs = [[100 * (u + 1) + i for i in range(n)] for u, n in enumerate(lengths)]
    return SplitData.from_sequences([10, 11, 12, 13], seqs), seqs


def test_training_samples_follow_comirec():
    data, seqs = split()
    L = 8
    by_first = {s[0]: s for s in seqs}
    seen_positions = set()
    for batch in training_dataset(data, L, batch_size=3, seed=7).take(200):
        history, target = batch["history"].numpy(), batch["target"].numpy()
        assert history.shape == (3, L) and target.shape == (3,)
        for h, t in zip(history, target, strict=True):
            seq = by_first[100 * (t // 100)]
            k = seq.index(t)
            assert k >= 4  # the target position is at least 4
            seen_positions.add((t // 100, k))
            expected = seq[max(0, k - L):k]  # the up to L items right before the target
            n = len(expected)
            np.testing.assert_array_equal(h[:n], expected)  # left-aligned, as ComiRec
            assert np.all(h[n:] == 0)  # padded with 0 at the end
    # Every user is sampled and targets vary (user 0 has one possible target position).
    assert {u for u, _ in seen_positions} == {1, 2, 3, 4}
    assert len({k for u, k in seen_positions if u == 3}) > 10


def test_training_stream_is_reproducible():
    data, _ = split()
    a = [b["target"].numpy() for b in training_dataset(data, 8, 3, seed=1).take(20)]
    b = [b["target"].numpy() for b in training_dataset(data, 8, 3, seed=1).take(20)]
    c = [b["target"].numpy() for b in training_dataset(data, 8, 3, seed=2).take(20)]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_users_too_short_for_a_target_are_skipped():
    data = SplitData.from_sequences([0, 1], [[1, 2, 3, 4], [5, 6, 7, 8, 9]])
    for batch in training_dataset(data, 4, 2).take(5):
        assert set(batch["target"].numpy()) == {9}


def test_evaluation_cut_is_80_20():
    data, seqs = split()
    history, targets, row_splits = evaluation_arrays(data, max_length=8)
    for u, seq in enumerate(seqs):
        cut = int(len(seq) * 0.8)  # 4, 9, 24, 5
        expected_history = seq[max(0, cut - 8):cut]
        np.testing.assert_array_equal(history[u, :len(expected_history)], expected_history)
        assert np.all(history[u, len(expected_history):] == 0)
        np.testing.assert_array_equal(targets[row_splits[u]:row_splits[u + 1]], seq[cut:])


def test_evaluation_dataset_pads_targets_per_batch():
    data, _ = split()
    batches = list(evaluation_dataset(data, 8, batch_size=3))
    assert [b["history"].shape[0] for b in batches] == [3, 1]
    first = batches[0]["targets"].numpy()
    assert first.shape == (3, 6)  # the longest target list in the batch: 30 - 24
    np.testing.assert_array_equal(first[0], [104, 0, 0, 0, 0, 0])


def test_every_target_position_is_a_target_once_per_epoch():
    from dmi_tf.data.pipeline import targets_per_epoch

    data, seqs = split()
    L, batch = 8, 4
    per_epoch = targets_per_epoch(data, 4, "every")
    assert per_epoch == sum(n - 4 for n in (5, 12, 30, 7))  # 1 + 8 + 26 + 3 = 38
    assert targets_per_epoch(data, 4, "random") == 4  # one target per user
    by_first = {s[0]: s for s in seqs}
    stream = training_dataset(data, L, batch, seed=3, targets="every")
    # Two epochs, cut into batches (the last partial batch of an epoch rolls over).
    seen = []
    for b in stream.take(2 * per_epoch // batch):
        for h, t in zip(b["history"].numpy(), b["target"].numpy(), strict=True):
            seq = by_first[100 * (t // 100)]
            k = seq.index(t)
            expected = seq[max(0, k - L):k]
            np.testing.assert_array_equal(h[:len(expected)], expected)
            assert np.all(h[len(expected):] == 0)
            seen.append(int(t))
    first = seen[:per_epoch]
    assert sorted(first) == sorted(s[k] for s in seqs for k in range(4, len(s)))
    assert seen[per_epoch:2 * per_epoch - 2] != first[:per_epoch - 2]  # reshuffled
    def first_batches(seed):
        return [b["target"].numpy() for b in training_dataset(
            data, L, batch, seed=seed, targets="every").take(5)]

    np.testing.assert_array_equal(first_batches(3), first_batches(3))  # reproducible
    assert not np.array_equal(first_batches(3), first_batches(4))


def test_targets_after_a_time_are_the_newer_interactions_with_full_histories():
    import pytest

    from dmi_tf.data.pipeline import first_targets, targets_per_epoch
    from dmi_tf.errors import DataError

    _, seqs = split()
    # User u's i-th interaction happens at time 10 * i + u: after 60.5, every user's from
    # position 6 on (60 + u > 60.5 for u >= 1; user 0 has 5 items, so none).
    times = [[10.0 * i + u for i in range(len(s))] for u, s in enumerate(seqs)]
    data = SplitData.from_sequences([10, 11, 12, 13], seqs, times)
    first = first_targets(data, 4, after=60.5)
    np.testing.assert_array_equal(first, [5, 6, 6, 6])  # user 0 has 5 items: none newer
    assert targets_per_epoch(data, 4, "every", after=60.5) == 0 + 6 + 24 + 1
    assert targets_per_epoch(data, 4, "random", after=60.5) == 3  # users with a new target
    np.testing.assert_array_equal(first_targets(data, 4, after=15.0), [4, 4, 4, 4])  # 4 is first
    by_first = {s[0]: s for s in seqs}
    for targets in ("every", "random"):
        seen = set()
        for b in training_dataset(data, 8, 4, seed=1, targets=targets, after=60.5).take(40):
            for h, t in zip(b["history"].numpy(), b["target"].numpy(), strict=True):
                u = t // 100 - 1
                k = by_first[100 * (u + 1)].index(t)
                assert times[u][k] > 60.5
                expected = seqs[u][max(0, k - 8):k]  # the history still reaches back before it
                np.testing.assert_array_equal(h[:len(expected)], expected)
                seen.add(int(t))
        newer = {s[k] for u, s in enumerate(seqs) for k in range(len(s))
                 if k >= 4 and times[u][k] > 60.5}
        # "every" visits each once per pass; "random" draws among them.
        assert seen == newer if targets == "every" else seen <= newer
    with pytest.raises(DataError, match="no training interaction is newer than 1000"):
        training_dataset(data, 8, 4, after=1000.0)
    with pytest.raises(DataError, match="no timestamp column"):
        first_targets(split()[0], 4, after=1.0)
