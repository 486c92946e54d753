"""The built-in synthetic dataset, with planted multi-interest structure.

Items belong to latent topics; within a topic, popularity follows a Zipf law,
and topics themselves are Zipf-popular. Each user holds 2-5 topic interests and
clicks through them with sticky switching: after each click the user stays in
the current topic with probability ``stickiness`` and otherwise jumps to
another of their topics. A share ``noise`` of clicks is drawn from global
popularity, unrelated to the user's interests.

A user's recent history therefore mixes several topics, and so do the 20%
held-out targets: one averaged user vector has to place its top-N between the
topics, while K interest vectors can each cover one. That is the gap
multi-interest models are meant to close, planted so it can be measured.

The raw log goes through the same ComiRec preprocessing as real data, so the
result is an ordinary :class:`Dataset`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dmi_tf.config import SyntheticConfig
from dmi_tf.data.dataset import Dataset, RawLog, SplitData


def generate_log(config: SyntheticConfig) -> tuple[RawLog, dict[str, int]]:
    """Draws the raw interaction log.

    Returns:
      The log (raw ids ``u<n>`` and ``i<n>``, timestamps = click order) and the
      planted topic of every raw item id, for measuring interest purity.
    """
    rng = np.random.default_rng(config.seed)
    n_items, n_topics = config.num_items, config.num_topics

    # Every topic gets items (balanced sizes); which items is random.
    item_topic = rng.permutation(np.arange(n_items) % n_topics)
    # Within-topic Zipf popularity: each topic's items get ranks 1, 2, ... in a random order.
    item_weight = np.empty(n_items)
    topic_items = []
    for t in range(n_topics):
        members = rng.permutation(np.nonzero(item_topic == t)[0])
        topic_items.append(members)
        item_weight[members] = 1.0 / np.arange(1, len(members) + 1) ** config.zipf_exponent
    # Sampling by inverse CDF: topic t's cumulative probabilities are shifted
    # into [t, t + 1], so one searchsorted serves every topic at once.
    topic_cdf = np.concatenate([
        t + np.cumsum(item_weight[m]) / item_weight[m].sum() for t, m in enumerate(topic_items)])
    topic_members = np.concatenate(topic_items)
    topic_popularity = 1.0 / np.arange(1, n_topics + 1) ** config.zipf_exponent
    topic_popularity = rng.permutation(topic_popularity / topic_popularity.sum())
    global_probs = item_weight * topic_popularity[item_topic]
    global_cdf = np.cumsum(global_probs / global_probs.sum())

    users, items, times = [], [], []
    clock = 0
    for u in range(config.num_users):
        n_interests = rng.integers(config.min_interests, config.max_interests + 1)
        interests = rng.choice(n_topics, size=n_interests, replace=False, p=topic_popularity)
        length = rng.integers(config.min_length, config.max_length + 1)
        # Sticky switching: a new interest starts where a uniform draw exceeds stickiness.
        switches = rng.random(length) >= config.stickiness
        switches[0] = True
        current = np.empty(length, dtype=np.int64)
        topic = -1
        for i in range(length):
            if switches[i]:
                others = interests[interests != topic] if n_interests > 1 else interests
                topic = rng.choice(others)
            current[i] = topic
        draws = rng.random(length)
        in_topic = topic_members[np.minimum(
            np.searchsorted(topic_cdf, current + draws), len(topic_members) - 1)]
        noise = np.minimum(np.searchsorted(global_cdf, draws), n_items - 1)
        seq = np.where(rng.random(length) < config.noise, noise, in_topic)
        users.extend([f"u{u}"] * length)
        items.extend(f"i{x}" for x in seq)
        times.extend(range(clock, clock + length))
        clock += length

    log = RawLog(users=users, items=items, timestamps=np.asarray(times, dtype=np.float64),
                 source="synthetic")
    return log, {f"i{i}": int(t) for i, t in enumerate(item_topic)}


def synthetic_dataset(config: SyntheticConfig) -> tuple[Dataset, np.ndarray]:
    """The preprocessed synthetic dataset and the planted topic of each item index.

    Returns:
      ``(dataset, item_topics)`` where ``item_topics[i]`` is the topic of item
      index ``i`` (``-1`` for the padding row 0).
    """
    from dmi_tf.data.prepare import prepare

    log, topic_of = generate_log(config)
    dataset = prepare(log, seed=config.seed, name=f"synthetic(seed={config.seed})")
    item_topics = np.array([-1] + [topic_of[raw] for raw in dataset.vocabulary[1:]], np.int64)
    dataset.item_categories = item_topics  # the planted topics are the categories
    return dataset, item_topics


def fresh_users(config: SyntheticConfig, vocabulary: list[str], num_users: int,
                min_count: int = 5) -> SplitData:
    """Users the dataset of ``config`` never saw, drawn by the same generator.

    A split of a few hundred users measures a HitRate to within a few users;
    evaluating trained models on many more users of the same distribution tells
    a real gap from the luck of the split. The generator draws items and topics
    before any user and users one after another, so these are users
    ``config.num_users ...`` of a longer draw: the catalogue is the dataset's own.

    Args:
      config: the synthetic config the models were trained on.
      vocabulary: the trained run's vocabulary (raw id of each item index).
      num_users: how many users to draw.
      min_count: as in ``prepare``: a user needs this many known items to be kept.

    Returns:
      A :class:`SplitData` of the kept users (items as vocabulary indices, in
      click order), for ``pipeline.evaluation_dataset``.
    """
    if num_users < 1:
        raise ValueError(f"num_users must be >= 1, got {num_users}")
    longer = dataclasses.replace(config, num_users=config.num_users + num_users)
    log, _ = generate_log(longer)
    index = {raw: i for i, raw in enumerate(vocabulary) if raw}
    users = np.asarray(log.users)
    # The log holds each user's clicks together, users in order.
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    user_ids, sequences = [], []
    for start, end in zip(starts[config.num_users:], ends[config.num_users:], strict=True):
        known = [index[raw] for raw in log.items[start:end] if raw in index]
        if len(known) >= min_count:
            user_ids.append(int(users[start][1:]))
            sequences.append(known)
    return SplitData.from_sequences(user_ids, sequences)
