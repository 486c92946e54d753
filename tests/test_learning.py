"""Models learn a planted signal: users with two disjoint interests.

Every user of this tiny dataset clicks through exactly two of 40 topics (more
topics than embedding dimensions, no popularity skew, no noise). A retriever
that keeps one vector per interest should return items of both topics; one
averaged vector tends to settle on one of them.
"""

import contextlib
import dataclasses
import io

import numpy as np
import pytest
import tensorflow as tf

from dmi_tf import config as config_lib
from dmi_tf.data.pipeline import evaluation_arrays, training_dataset
from dmi_tf.data.synthetic import synthetic_dataset
from dmi_tf.models import build_model
from dmi_tf.retrieval import retrieve

pytestmark = pytest.mark.slow  # every model trains

TOP = 20


@pytest.fixture(scope="module")
def planted():
    config = config_lib.load(None, [
        "data.synthetic.num_users=1500", "data.synthetic.num_items=400",
        "data.synthetic.num_topics=40", "data.synthetic.min_interests=2",
        "data.synthetic.max_interests=2", "data.synthetic.min_length=30",
        "data.synthetic.max_length=40", "data.synthetic.noise=0.0",
        "data.synthetic.zipf_exponent=0.0", "data.synthetic.seed=5",
        "model.embedding_dim=16", "model.num_interests=2", "loss.num_negatives=128"])
    dataset, topics = synthetic_dataset(config.data.synthetic)
    return config, dataset, topics


def both_topics_share(config, dataset, topics, model_name, steps, learning_rate):
    # A high learning rate lets every model converge on this tiny problem in 600 steps.
    """Share of test users whose top-20 holds >= 4 items of each of their two topics."""
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, name=model_name),
        train=dataclasses.replace(config.train, learning_rate=learning_rate))
    tf.keras.utils.set_random_seed(0)
    model = build_model(config, dataset.num_items, dataset.train)
    model.compile(optimizer=tf.keras.optimizers.Adam(config.train.learning_rate))
    with contextlib.redirect_stdout(io.StringIO()):
        model.fit(training_dataset(dataset.train, 20, 128, seed=0), steps_per_epoch=steps,
                  epochs=1, verbose=0)
    history, _, _ = evaluation_arrays(dataset.test, 20)
    _, ids = retrieve(model.interests(history), model.candidate_embeddings(), TOP)
    covered = []
    for h, retrieved in zip(history, ids.numpy(), strict=True):
        user_topics, seen = np.unique(topics[h[h > 0]], return_counts=True)
        assert len(user_topics) <= 2  # the planted structure (no noise clicks)
        if len(user_topics) < 2 or seen.min() < 3:
            continue  # the visible history shows only one interest
        counts = [np.sum(topics[retrieved] == t) for t in user_topics]
        covered.append(min(counts) >= 4)
    assert len(covered) > 50
    return float(np.mean(covered))


@pytest.fixture(scope="module")
def single_interest_share(planted):
    return both_topics_share(*planted, "youtube_dnn", 600, 1e-2)


# DMI trains its refiner jointly with the backbone and needs more steps: at 600
# it reached 53% here (its backbone alone, S = 0: 55%), at 1,500 74%.
@pytest.mark.parametrize("model_name, steps", [("comirec_sa", 600), ("comirec_dr", 600),
                                               ("mind", 600), ("dmi", 1500)])
def test_multi_interest_models_retrieve_both_interests(planted, single_interest_share,
                                                       model_name, steps):
    single = single_interest_share
    multi = both_topics_share(*planted, model_name, steps, 1e-2)
    print(f"{model_name}: both topics in top-{TOP} for {multi:.0%} of users; "
          f"youtube_dnn: {single:.0%}")
    assert multi >= 0.6
    assert multi >= single + 0.2
