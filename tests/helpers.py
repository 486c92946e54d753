"""Inputs and helpers shared by several test files."""

import numpy as np


def masked_history(seed=0, batch=4, length=6, d=4):
    """Random history embeddings ``[batch, L, d]`` and a mask with users of 3, 1, 5 and L items."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, length, d)).astype(np.float32)
    mask = np.ones((batch, length), bool)
    for user, real in enumerate([3, 1, 5][:batch]):
        mask[user, real:] = False
    return x, mask


def input_and_weight_gradients(layer, x, mask):
    """Gradients of ``sum(layer(x, mask)²)`` w.r.t. the input and every trainable weight."""
    import tensorflow as tf

    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x, mask) ** 2)
    grads = tape.gradient(loss, [x, *layer.trainable_variables])
    return [None if g is None else tf.convert_to_tensor(g).numpy() for g in grads]


def exhaustive_scann(num_reordering_candidates):
    """A ScaNN index config that searches every leaf and re-scores every candidate.

    ScaNN must then give the exact answer, so a test can check the exported
    ScaNN path (ids, offsets, merge) against the exact one. At the default
    settings its recall varies with the trained weights (a 0.8 bar on it failed
    a clean run at 0.797); benchmarks/scann_index.py measures that recall.
    """
    from dmi_tf.index import IndexConfig, ScannConfig

    return IndexConfig(kind="scann", scann=ScannConfig(
        num_leaves=10, num_leaves_to_search=10,
        num_reordering_candidates=num_reordering_candidates))


def versions_during_swap(port, model, send, publish, swapped, client_timeout=30, deadline=60):
    """Client traffic while a new model version is published: what the clients saw.

    Four clients call ``send(client, rng) -> version`` back to back; after half a
    second ``publish(versions)`` writes the new version, then the traffic goes on
    until ``swapped(versions)`` holds (or ``deadline`` seconds pass) and half a
    second more.

    Returns:
      ``(versions, errors)``: every answered version in order, every exception.
    """
    import threading
    import time

    from serving import client as client_lib

    stop, errors, versions = threading.Event(), [], []

    def traffic(seed):
        rng = np.random.default_rng(seed)
        with client_lib.TopKClient(f"127.0.0.1:{port}", model, timeout=client_timeout) as client:
            while not stop.is_set():
                try:
                    versions.append(send(client, rng))
                except Exception as e:
                    errors.append(e)

    threads = [threading.Thread(target=traffic, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        publish(versions)
        end = time.monotonic() + deadline
        while not swapped(versions) and time.monotonic() < end:
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    return versions, errors
