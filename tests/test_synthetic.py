import dataclasses

import pytest

from dmi_tf.config import SyntheticConfig
from dmi_tf.data.synthetic import fresh_users, generate_log, synthetic_dataset

SMALL = SyntheticConfig(num_users=60, num_items=120, num_topics=12)


def test_a_longer_draw_keeps_the_catalogue_and_the_first_users():
    # What makes fresh users comparable: the same items and topics, the old users unchanged.
    log, topics = generate_log(SMALL)
    longer_log, longer_topics = generate_log(dataclasses.replace(SMALL, num_users=90))
    assert topics == longer_topics
    n = len(log.items)
    assert longer_log.users[:n] == log.users and longer_log.items[:n] == log.items
    assert longer_log.users[n] == "u60"


def test_fresh_users_are_new_users_on_the_trained_vocabulary():
    dataset, _ = synthetic_dataset(SMALL)
    users = fresh_users(SMALL, dataset.vocabulary, 30)
    assert len(users.user_ids) == 30  # every generated user has >= 20 clicks, all kept
    assert users.user_ids.min() == 60
    assert users.items.min() >= 1 and users.items.max() < dataset.num_items
    # Item indices mean what they mean to the trained model: the clicks of user 60 in the
    # longer log, minus items the dataset dropped.
    log, _ = generate_log(dataclasses.replace(SMALL, num_users=90))
    raw = [item for user, item in zip(log.users, log.items, strict=True) if user == "u60"]
    known = [item for item in raw if item in dataset.vocabulary]
    assert [dataset.vocabulary[i] for i in users.sequence(0)] == known


def test_fresh_users_drop_users_with_too_few_known_items():
    dataset, _ = synthetic_dataset(SMALL)
    assert len(fresh_users(SMALL, dataset.vocabulary, 10, min_count=1000).user_ids) == 0
    with pytest.raises(ValueError):
        fresh_users(SMALL, dataset.vocabulary, -1)
