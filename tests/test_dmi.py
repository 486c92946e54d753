"""The DMI model: reduction to its backbone, gradients, determinism, XLA and the training loss."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from dmi_tf import config as config_lib
from dmi_tf.data.dataset import SplitData
from dmi_tf.errors import ConfigError, UserError
from dmi_tf.models import build_model
from dmi_tf.models.dmi import DMI

TRAIN = SplitData.from_sequences([0, 1], [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]])
HISTORY = tf.constant([[1, 2, 3, 0, 0, 0], [4, 5, 6, 7, 8, 9], [10, 0, 0, 0, 0, 0]])
FEATURES = {"history": HISTORY, "target": tf.constant([4, 10, 11])}


def config(*overrides):
    return config_lib.load(None, ["model.name=dmi", "model.embedding_dim=8",
                                  "data.max_length=6", "loss.num_negatives=8", *overrides])


def model_of(*overrides, seed=0):
    tf.keras.utils.set_random_seed(seed)
    model = build_model(config(*overrides), num_items=13, train=TRAIN)
    model.interests(HISTORY)
    model.compute_loss(FEATURES, training=True)  # builds the refiner even when S = 0
    return model


@pytest.mark.parametrize("backbone", ["comirec_sa", "comirec_dr", "mind"])
def test_rho_zero_is_exactly_the_backbone(backbone):
    dmi = model_of("diffusion.noise_dims_ratio=0", f"model.extractor={backbone}")
    assert isinstance(dmi, DMI) and dmi.refiner is None
    tf.keras.utils.set_random_seed(1)
    plain = build_model(dataclasses.replace(config(), model=dataclasses.replace(
        config().model, name=backbone)), num_items=13, train=TRAIN)
    plain.interests(HISTORY)
    assert len(plain.trainable_variables) == len(dmi.trainable_variables)
    for target, source in zip(plain.trainable_variables, dmi.trainable_variables, strict=True):
        target.assign(source)
    np.testing.assert_array_equal(dmi.interests(HISTORY).numpy(), plain.interests(HISTORY).numpy())
    # The same negatives for both, drawn once on the "pipeline".
    features = dmi.task.add_negatives(FEATURES)
    np.testing.assert_array_equal(dmi.compute_loss(features).numpy(),
                                  plain.compute_loss(features).numpy())


def test_zero_inference_steps_answer_the_coarse_interests():
    refined = model_of()
    coarse_only = model_of("diffusion.infer_steps=0")
    coarse_only.set_weights(refined.get_weights())
    np.testing.assert_array_equal(coarse_only.interests(HISTORY).numpy(),
                                  refined.coarse_interests(HISTORY).numpy())
    # The refiner does move the interests when it runs.
    assert not np.allclose(refined.interests(HISTORY).numpy(),
                           refined.coarse_interests(HISTORY).numpy())


@pytest.mark.slow
def test_interests_are_deterministic_and_compile_with_xla():
    model = model_of("diffusion.infer_steps=4", "diffusion.keep_items=2")
    first = model.interests(HISTORY).numpy()
    np.testing.assert_array_equal(model.interests(HISTORY).numpy(), first)
    compiled = tf.function(model.interests, jit_compile=True)
    np.testing.assert_allclose(compiled(HISTORY).numpy(), first, rtol=1e-4, atol=1e-5)
    weights = model.explain(HISTORY).numpy()
    assert weights.shape == (3, 4, 6)
    assert np.all(weights[HISTORY.numpy()[:, None, :].repeat(4, 1) == 0] == 0)
    assert np.all((weights > 0).sum(-1) <= 2)  # r = 2 kept items per interest


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [(), ("diffusion.infer_steps=4", "diffusion.keep_items=2"),
                                       ("diffusion.denoiser=mlp",)])
def test_folding_for_inference_keeps_the_answers_and_refreshes(overrides):
    model = model_of(*overrides)
    unfolded = model.interests(HISTORY).numpy()
    weights = model.explain(HISTORY).numpy()
    model.fold_for_inference()
    assert model.refiner.folded
    np.testing.assert_allclose(model.interests(HISTORY).numpy(), unfolded, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.explain(HISTORY).numpy(), weights, rtol=1e-5, atol=1e-6)
    # New weights are seen after the next fold, not before: the folded values are a snapshot.
    for variable in model.refiner.trainable_variables:
        variable.assign(variable * 1.5)
    stale = model.interests(HISTORY).numpy()
    model.fold_for_inference()
    fresh = model.interests(HISTORY).numpy()
    assert not np.allclose(stale, fresh)
    reference = model_of(*overrides)
    reference.set_weights([w for w, v in zip(model.get_weights(), model.weights, strict=True)
                           if "folded" not in v.name])
    np.testing.assert_allclose(fresh, reference.interests(HISTORY).numpy(), rtol=1e-5, atol=1e-6)


def test_a_folded_model_refuses_training():
    model = model_of()
    model.fold_for_inference()
    with pytest.raises(UserError, match="folded for inference"):
        model.compute_loss(FEATURES, training=True)


@pytest.mark.parametrize("train_interests", ["chosen", "all"])
def test_gradients_reach_the_denoiser_the_backbone_and_the_items(train_interests):
    model = model_of("diffusion.layers=2", f"diffusion.train_interests={train_interests}")
    with tf.GradientTape() as tape:
        loss = model.compute_loss(FEATURES, training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(loss.numpy())
    # ComiRec-SA's W2 bias (kept from ComiRec) adds one constant per interest to
    # logits that a softmax over L normalises: its true gradient is zero, and is checked as such.
    dead = {"w2/bias:0"}
    missing = [v.name for v, g in zip(model.trainable_variables, grads, strict=True)
               if v.name not in dead and (g is None or not np.any(tf.convert_to_tensor(g).numpy()))]
    assert not missing, f"no gradient reaches {missing}"
    for v, g in zip(model.trainable_variables, grads, strict=True):
        if v.name in dead and g is not None:
            np.testing.assert_allclose(tf.convert_to_tensor(g).numpy(), 0.0, atol=1e-6)
    assert model.refiner.denoiser.trainable_variables and model.extractor.trainable_variables


def test_training_all_interests_refines_each_as_if_alone():
    # Without noise (s = 0) and with one step (t = 1) a training draw is
    # deterministic, so refining all K at once must give, per interest, what
    # refining that interest alone gives.
    model = model_of("diffusion.noise_scale=0", "diffusion.steps=1",
                     "diffusion.train_interests=all",
                     "model.num_interests=3")
    embeddings, mask, interests, weights = model._extract(HISTORY)
    u_all, x0_all = model.refiner.train_refine_all(interests, embeddings, mask, weights)
    assert u_all.shape == interests.shape == x0_all.shape
    for k in range(3):
        u, x0 = model.refiner.train_refine(interests[:, k], embeddings, mask, weights[:, k])
        np.testing.assert_allclose(u_all[:, k].numpy(), u.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(x0_all[:, k].numpy(), x0.numpy(), rtol=1e-5, atol=1e-6)
    # And the training readout picks among the refined interests.
    features = model.task.add_negatives(FEATURES)
    chosen = model._retrieval_loss(
        tf.gather(u_all, tf.argmax(tf.einsum("bkd,bd->bk", u_all, model.item_embedding(
            FEATURES["target"])), axis=1, output_type=tf.int32), axis=1, batch_dims=1),
        model.item_embedding(FEATURES["target"]), features)
    recon = tf.reduce_mean(tf.reduce_sum(tf.square(x0_all - interests), axis=-1))
    np.testing.assert_allclose(model.compute_loss(features, training=True).numpy(),
                               (chosen + 0.1 * recon).numpy(), rtol=1e-5)


def test_reconstruction_weight_enters_the_loss():
    with_recon, without = model_of(), model_of("diffusion.recon_weight=0")
    without.set_weights(with_recon.get_weights())
    # The same generator seed draws the same noise in both; the same negatives too.
    features = with_recon.task.add_negatives(FEATURES)
    with_recon.recon_tracker.reset_state()
    a = with_recon.compute_loss(features, training=True).numpy()
    b = without.compute_loss(features, training=True).numpy()
    recon = with_recon.recon_tracker.result().numpy()
    assert recon > 0
    np.testing.assert_allclose(a - b, 0.1 * recon, rtol=1e-4)


@pytest.mark.slow
def test_dmi_trains_through_keras_fit_and_saves_its_reverse_pass(tmp_path):
    from dmi_tf.data.pipeline import training_dataset
    model = model_of("diffusion.infer_steps=2")
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    stream = model.training_stream(training_dataset(TRAIN, 6, 4, min_target_position=2, seed=0))
    history = model.fit(stream, steps_per_epoch=5, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert history.history["reconstruction_loss"][0] > 0
    module = tf.Module()
    module.model = model
    module.serve = tf.function(model.interests,
                               input_signature=[tf.TensorSpec([None, None], tf.int32)])
    tf.saved_model.save(module, str(tmp_path / "sm"))
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    np.testing.assert_allclose(loaded.serve(HISTORY).numpy(), model.interests(HISTORY).numpy(),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("override, key", [
    ("diffusion.noise_dims_ratio=1.5", "diffusion.noise_dims_ratio"),
    ("diffusion.heads=3", "diffusion.heads"),
    ("diffusion.infer_start=50", "diffusion.infer_start"),
    ("diffusion.denoiser=transformer", "diffusion.denoiser"),
    ("model.extractor=youtube_dnn", "model.extractor"),
    ("diffusion.train_interests=some", "diffusion.train_interests"),
])
def test_bad_diffusion_settings_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config(override)
