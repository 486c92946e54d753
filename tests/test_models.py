import numpy as np
import pytest
import tensorflow as tf

from dmi_tf.config import Config, ModelConfig
from dmi_tf.data.dataset import SplitData
from dmi_tf.layers.pooling import GRUPooling, MaskedMeanPooling
from dmi_tf.layers.readout import HardReadout
from dmi_tf.models import build_model
from dmi_tf.models.most_popular import MostPopular

TRAIN = SplitData.from_sequences([0, 1], [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]])


@pytest.mark.parametrize("layer_cls", [MaskedMeanPooling, GRUPooling])
def test_masked_positions_never_influence_the_output(layer_cls):
    layer = layer_cls(4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    y = x.copy()
    y[0, 3:] = rng.normal(size=(2, 3)) * 100  # garbage behind the mask
    a, b = layer(x, mask), layer(y, mask)
    assert a.shape == (2, 1, 4)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)
    z = x.copy()
    z[0, 1] += 1.0  # a real item does matter
    assert not np.allclose(layer(z, mask).numpy()[0], a.numpy()[0])


def test_mean_pooling_of_an_empty_history_is_finite():
    out = MaskedMeanPooling(3)(np.ones((1, 4, 2), np.float32), np.zeros((1, 4), bool))
    assert np.all(np.isfinite(out.numpy()))


@pytest.mark.parametrize("layer_cls", [MaskedMeanPooling, GRUPooling])
def test_layers_round_trip_through_config(layer_cls):
    layer = layer_cls(7, initializer="glorot", name="pool")
    clone = layer_cls.from_config(layer.get_config())
    assert clone.units == 7 and clone.initializer == "glorot" and clone.name == "pool"


def test_hard_readout_picks_the_interest_closest_to_the_target():
    interests = tf.constant([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
    target = tf.constant([[0.1, 0.9]])
    np.testing.assert_array_equal(HardReadout()(interests, target).numpy(), [[0.0, 1.0]])


def test_gradients_reach_item_embeddings_and_extractor():
    config = Config(model=ModelConfig(embedding_dim=8))
    model = build_model(config, num_items=30, train=TRAIN)
    features = {"history": tf.constant([[1, 2, 3, 0], [4, 5, 0, 0]]),
                "target": tf.constant([6, 7])}
    with tf.GradientTape() as tape:
        loss = model.compute_loss(features, training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(loss.numpy())
    names = {v.name: g for v, g in zip(model.trainable_variables, grads, strict=True)}
    assert all(g is not None for g in names.values()), names.keys()
    table = tf.convert_to_tensor(names[model.item_embedding.embeddings.name]).numpy()
    assert np.abs(table[[1, 2, 3, 6]]).sum() > 0  # history items and the target
    assert model.interests(features["history"]).shape == (2, 1, 8)


def test_initializer_choice_changes_the_weights():
    def first_kernel(init):
        config = Config(model=ModelConfig(embedding_dim=8, initializer=init))
        tf.keras.utils.set_random_seed(0)
        model = build_model(config, num_items=30, train=TRAIN)
        model.interests(tf.constant([[1, 2]]))
        return model.item_embedding.embeddings.numpy()
    he, glorot = first_kernel("he"), first_kernel("glorot")
    # He over the embedding width: std = sqrt(2 / d) = 0.5; Glorot over (30 + 8): ~0.23.
    assert he.std() == pytest.approx(0.5, rel=0.15)
    assert glorot.std() == pytest.approx(np.sqrt(2 / 38), rel=0.15)


def test_most_popular_scores_by_count():
    model = MostPopular(np.array([0, 5, 9, 1]))
    scores = tf.linalg.matvec(model.candidate_embeddings(), model.interests(tf.zeros([2, 3]))[0, 0])
    np.testing.assert_array_equal(scores.numpy(), [0, 5, 9, 1])


def test_he_positions_start_small_next_to_items():
    from dmi_tf.layers.initializers import position_initializer
    positions = position_initializer("he", 20, 64, seed=0)([20, 64]).numpy()
    assert positions.std() == pytest.approx(np.sqrt(2 / (20 * 64)), rel=0.1)


def test_training_stream_carries_negatives_into_the_loss():
    from dmi_tf.data.pipeline import training_dataset
    config = Config(model=ModelConfig(embedding_dim=8))
    model = build_model(config, num_items=30, train=TRAIN)
    stream = model.training_stream(training_dataset(TRAIN, 4, 2, seed=0))
    batch = next(iter(stream))
    negative_ids = batch["negatives"][0].numpy()
    assert len(negative_ids) == 29 and negative_ids.min() >= 1  # all real items, never padding
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    history = model.fit(stream, steps_per_epoch=3, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def build(loss="sampled_softmax", **model_fields):
    from dmi_tf.config import from_dict

    config = from_dict({"model": {"embedding_dim": 8, **model_fields},
                        "diffusion": {"dropout": model_fields.get("dropout", 0.0),
                                      "backbone_loss_weight": 1.0},
                        "loss": {"kind": loss}})
    tf.keras.utils.set_random_seed(0)
    return build_model(config, num_items=30, train=TRAIN)


@pytest.mark.parametrize("name", ["comirec_sa", "dmi", "sasrec", "youtube_dnn"])
def test_cosine_scoring_normalises_interests_and_items(name):
    model = build(name=name, score="cosine", num_interests=2)
    history = tf.constant([[1, 2, 3, 0], [4, 5, 0, 0]])
    norms = np.linalg.norm(model.interests(history).numpy(), axis=-1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    table = tf.convert_to_tensor(model.candidate_embeddings()).numpy()
    np.testing.assert_allclose(np.linalg.norm(table[1:], axis=-1), 1.0, rtol=1e-5)
    assert np.isfinite(model.compute_loss({"history": history, "target": tf.constant([6, 7])},
                                          training=True).numpy())


@pytest.mark.parametrize("name", ["comirec_sa", "dmi", "sasrec"])
def test_dropout_is_off_at_inference(name):
    history = tf.constant([[1, 2, 3, 0], [4, 5, 6, 7]])
    with_dropout, without = build(name=name, dropout=0.5), build(name=name, dropout=0.0)
    without.interests(history)  # both built alike, so their weights line up
    a = with_dropout.interests(history).numpy()
    np.testing.assert_array_equal(a, with_dropout.interests(history).numpy())
    for v, w in zip(with_dropout.weights, without.weights, strict=True):
        w.assign(v)  # same weights: the only difference is the dropout rate
    np.testing.assert_allclose(a, without.interests(history).numpy(), rtol=1e-6, atol=1e-6)
    features = {"history": history, "target": tf.constant([6, 8])}
    # Training draws differ from call to call: dropout is on there.
    assert with_dropout.compute_loss(features, training=True).numpy() != \
        with_dropout.compute_loss(features, training=True).numpy()


def test_routing_variance_by_hand():
    from dmi_tf.models.base import routing_variance

    # One user, K = 2, L = 4, d = 2. Interest 0 spread evenly: variance 0. Interest 1
    # on one item: mean 0.25, squares 0.5625 + 3 * 0.0625 = 0.75, over d: 0.375.
    weights = tf.constant([[[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]]])
    np.testing.assert_allclose(routing_variance(weights, 2).numpy(), [0.375**2], rtol=1e-6)


def test_routing_regularisation_adds_lambda_times_the_summed_variance():
    from dmi_tf.models.base import routing_variance

    features = {"history": tf.constant([[1, 2, 3, 0], [4, 5, 0, 0]]),
                "target": tf.constant([6, 7])}
    # Full softmax: no sampled negatives, so the two losses differ by the regulariser only.
    model = build(loss="full_softmax", name="comirec_sa")
    _, _, _, weights = model._extract(features["history"])
    extra = 100.0 * tf.reduce_sum(routing_variance(weights, 8)).numpy()
    assert extra > 0
    a = model.compute_loss(features).numpy()
    model.routing_weight = 100.0
    b = model.compute_loss(features).numpy()
    np.testing.assert_allclose(b - a, extra, rtol=1e-4)


def test_an_interest_not_served_is_a_copy_of_the_anchor():
    model = build(name="comirec_sa", num_interests=3, choose_interests=True)
    history = tf.constant([[1, 2, 3, 0], [4, 5, 6, 7]])
    assert model.interest_choices() == (0, 1)
    every = model.interests(history).numpy()
    assert not np.allclose(every[:, 1], every[:, 0])
    model.use_interests(1)
    anchor_only = model.interests(history).numpy()
    np.testing.assert_array_equal(anchor_only, np.repeat(every[:, :1], 3, axis=1))
    weights = model.explain(history).numpy()
    np.testing.assert_array_equal(weights[:, 2], weights[:, 0])
    assert build(name="comirec_sa", num_interests=3).interest_choices() == ()


def test_the_anchor_is_trained_on_every_target():
    history = tf.constant([[1, 2, 3, 0], [4, 5, 6, 7]])
    features = {"history": history, "target": tf.constant([6, 8])}
    model = build(loss="full_softmax", name="comirec_sa", num_interests=3, choose_interests=True)
    interests = model._scored(model._extract(history)[2])
    targets = model._items(features["target"])
    plain = model._retrieval_loss(model.readout(interests, targets), targets, features)
    anchor = model._retrieval_loss(interests[:, 0], targets, features)
    np.testing.assert_allclose(model.compute_loss(features).numpy(), (plain + anchor).numpy(),
                               rtol=1e-5)


def test_validation_keeps_the_better_interest_choice():
    from dmi_tf.evaluate import evaluate_choosing_interests

    model = build(name="dmi", num_interests=2, choose_interests=True)
    # Pretend serving the anchor alone validates better, then that all K do.
    for scores, kept in (({0: 0.1, 1: 0.2}, 1), ({0: 0.3, 1: 0.2}, 0), ({0: 0.2, 1: 0.2}, 0)):
        metrics = evaluate_choosing_interests(
            model, lambda s=scores: {"recall@50": s[int(model.served_interests.numpy())]},
            "recall@50")
        assert metrics == {"recall@50": scores[kept], "served_interests": kept}
        assert int(model.served_interests.numpy()) == kept
    plain = build(name="comirec_sa", num_interests=2)
    assert evaluate_choosing_interests(plain, lambda: {"recall@50": 0.5}, "recall@50") == {
        "recall@50": 0.5}


def test_choosing_interests_needs_several_of_them():
    from dmi_tf.config import from_dict
    from dmi_tf.errors import ConfigError

    with pytest.raises(ConfigError, match="choose_interests"):
        from_dict({"model": {"name": "comirec_sa", "num_interests": 1, "choose_interests": True}})
    with pytest.raises(ConfigError, match="backbone_loss_weight"):
        from_dict({"model": {"name": "dmi", "num_interests": 4, "choose_interests": True}})
