"""DMI: a multi-interest backbone whose interests a diffusion refiner sharpens."""

from __future__ import annotations

import tensorflow as tf

from dmi_tf.data.pipeline import HISTORY, TARGET
from dmi_tf.errors import UserError
from dmi_tf.layers.diffusion import DiffusionRefiner
from dmi_tf.layers.readout import hard_choice
from dmi_tf.models.base import MultiInterestModel


class DMI(MultiInterestModel):
    """Backbone extractor + :class:`DiffusionRefiner`, trained jointly.

    Training: the coarse interest meeting the target (hard readout) is noised,
    denoised and combined into ``u``; the loss is the retrieval loss on ``u`` plus
    ``μ·‖x̂0 - stop_grad(v0)‖²`` (squared norm over d, mean over the batch).
    Inference: all K interests go through the deterministic reverse pass.
    Without a refiner (ρ = 0) or with ``infer_steps = 0`` the model answers
    exactly what its backbone answers.

    Args:
      item_embedding, task: as :class:`MultiInterestModel`.
      extractor: a layer with ``attend(history_embeddings, mask) ->
        (interests [batch, K, d], weights [batch, K, L])``.
      refiner: the refiner, or None (ρ = 0: the backbone alone).
      recon_weight: μ.
      backbone_loss_weight: weight of the retrieval loss on ``v0`` itself (keeps
        the coarse interests good on their own; 0 = the loss sees only ``u``); with
        ``choose_interests``, on the anchor, interest 0, for every target instead.
      train_interests: ``chosen`` refines, in training, the interest the hard
        readout picks for the target; ``all`` refines all K and the readout picks
        among the refined ones (as retrieval scores them at inference).
      infer_steps: S; 0 skips the refiner at inference.
    """

    def __init__(self, item_embedding, extractor, task, refiner: DiffusionRefiner | None,
                 recon_weight: float = 0.1, infer_steps: int = 1,
                 backbone_loss_weight: float = 0.0, train_interests: str = "chosen",
                 **kwargs):
        super().__init__(item_embedding, extractor, task, **kwargs)
        if not hasattr(extractor, "attend"):
            raise ValueError(f"DMI needs an extractor with attend(); {type(extractor).__name__} "
                             "has none (use comirec_sa, comirec_dr or mind)")
        self.refiner = refiner
        self.recon_weight = recon_weight
        self.backbone_loss_weight = backbone_loss_weight
        if train_interests not in ("chosen", "all"):
            raise ValueError(f"train_interests must be 'chosen' or 'all', got {train_interests!r}")
        self.train_interests = train_interests
        self.infer_steps = infer_steps
        self.recon_tracker = tf.keras.metrics.Mean("reconstruction_loss")

    @property
    def refines(self) -> bool:
        return self.refiner is not None and self.infer_steps > 0

    def coarse_interests(self, history):
        return self._served(self._scored(self._extract(history)[2]))

    def refine(self, history):
        """``(refined [batch, K, d], coarse [batch, K, d], weights [batch, K, L])``.

        Both sets of interests as retrieval scores them (L2-normalised with
        ``score: cosine``). ``weights`` are the refiner's attention over the
        history items it kept (the backbone's weights when nothing is refined).
        """
        embeddings, mask, coarse, weights = self._extract(history)
        if not self.refines:
            coarse = self._served(self._scored(coarse))
            return coarse, coarse, self._served(weights)
        refined, weights = self.refiner(coarse, embeddings, mask, weights)
        return (self._served(self._scored(refined)), self._served(self._scored(coarse)),
                self._served(weights))

    def interests(self, history, training=False):
        return self.refine(history)[0]

    def explain(self, history):
        return self.refine(history)[2]

    def fold_for_inference(self):
        """Folds the refiner's weight-only products for serving (see the refiner's method)."""
        if self.refiner is not None:
            self.refiner.fold_for_inference()

    def compute_loss(self, features, training=False):
        if self.refiner is not None and self.refiner.folded:
            raise UserError("this DMI model was folded for inference (fold_for_inference, as "
                            "export does); train the model loaded from its run instead.")
        embeddings, mask, interests, weights = self._extract(features[HISTORY], training)
        target_embeddings = self._items(features[TARGET])
        routing = self._routing_loss(weights)
        # The hard readout, kept as an index: the refiner also needs that interest's weights.
        chosen = hard_choice(self._scored(interests), target_embeddings)
        v0 = tf.gather(interests, chosen, axis=1, batch_dims=1)
        if self.refiner is None:
            return self._retrieval_loss(self._scored(v0), target_embeddings, features) + routing
        if self.train_interests == "all":
            u_all, x0_hat = self.refiner.train_refine_all(interests, embeddings, mask, weights)
            u_all = self._scored(u_all)
            u = tf.gather(u_all, hard_choice(u_all, target_embeddings), axis=1, batch_dims=1)
            clean = interests
        else:
            u, x0_hat = self.refiner.train_refine(
                v0, embeddings, mask, tf.gather(weights, chosen, axis=1, batch_dims=1))
            u = self._scored(u)
            clean = v0
        # The refiner works on the raw interests; only scoring normalises.
        recon = tf.reduce_mean(tf.reduce_sum(tf.square(x0_hat - tf.stop_gradient(clean)),
                                             axis=-1))
        self.recon_tracker.update_state(recon)
        loss = (self._retrieval_loss(u, target_embeddings, features) + self.recon_weight * recon
                + routing)
        if self.backbone_loss_weight:
            # With an anchor (choose_interests) the coarse loss trains interest 0 on every
            # target, so that it can serve alone; otherwise the interest the readout chose.
            coarse = interests[:, 0] if self.served_interests is not None else v0
            loss += self.backbone_loss_weight * self._retrieval_loss(
                self._scored(coarse), target_embeddings, features)
        return loss

    @property
    def metrics(self):
        return [*super().metrics, self.recon_tracker]
