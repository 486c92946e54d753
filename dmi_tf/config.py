"""Typed run configuration, loaded from YAML with strict checking.

A config is a tree of dataclasses. YAML files in ``configs/`` (one per dataset x
model) set any subset of fields; everything else keeps the defaults below, so
the defaults alone are a complete run (the built-in synthetic data). Unknown
keys and wrong types are errors that name the key and the file: a typo must
never silently fall back to a default.

Command-line overrides use dotted paths, ``model.num_interests=8``, with the
value parsed as YAML and checked like a file value.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from typing import Any, Literal

import yaml

from dmi_tf.errors import ConfigError


@dataclasses.dataclass
class SyntheticConfig:
    """The built-in dataset with planted multi-interest structure (see ``data/synthetic.py``)."""

    num_users: int = 4000
    num_items: int = 2000
    # Many small topics (more than embedding dimensions) make blending a user's
    # topics into one vector lossy, which is the gap multi-interest models close.
    num_topics: int = 100
    min_interests: int = 2
    max_interests: int = 5
    min_length: int = 20
    max_length: int = 80
    stickiness: float = 0.8
    noise: float = 0.1
    zipf_exponent: float = 0.7
    seed: int = 0


@dataclasses.dataclass
class DataConfig:
    """Where the data comes from and how samples are cut from it."""

    # A folder of split files (``python -m dmi_tf.data.prepare`` writes one);
    # null means the built-in synthetic dataset.
    path: str | None = None
    # L: the number of most recent history items a model sees.
    max_length: int = 20
    # ComiRec draws training targets at positions >= 4 (0-based), so at least
    # four history items precede every target.
    min_target_position: int = 4
    # Which training targets a pass over the data visits: ComiRec's one random
    # target position per user (random), or every position >= min_target_position
    # of every training user once, in shuffled order (every), as SASRec trains.
    training_targets: Literal["random", "every"] = "random"
    synthetic: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)


@dataclasses.dataclass
class ModelConfig:
    """The model and its shapes."""

    name: Literal["youtube_dnn", "sasrec", "most_popular", "item_knn", "mind", "comirec_dr",
                  "comirec_sa", "dmi"] = "youtube_dnn"
    # DMI's backbone: the extractor whose interests the diffusion refiner refines.
    extractor: Literal["comirec_sa", "comirec_dr", "mind", "sasrec"] = "comirec_sa"
    embedding_dim: int = 64
    # K, the number of interests of a multi-interest model (single-interest models use 1).
    num_interests: int = 4
    # How weights start. "he" (He/Kaiming-uniform) trained better than Glorot for
    # attention extractors on MovieLens-100k; see the README's "Initialisation".
    initializer: Literal["he", "glorot", "normal"] = "he"
    # Single-interest pooling: mean of history embeddings (YouTube-DNN) or a GRU.
    pooling: Literal["mean", "gru"] = "mean"
    # Which interest the loss sees for a target: the closest one (ComiRec) or
    # MIND's label-aware attention, softmax over interests of pow(score, p).
    readout: Literal["hard", "label_aware"] = "hard"
    readout_power: float = 1.0
    # Capsule routing (mind, comirec_dr).
    routing_iterations: int = 3
    # MIND's dynamic K: max(1, min(K, log2(history length))).
    dynamic_interests: bool = False
    # ComiRec-SA's W1 width as a multiple of d (ComiRec: 4).
    attention_hidden_factor: int = 4
    # item_knn: keep each item's top-n similar items (null = all).
    knn_neighbors: int | None = None
    # How a user vector scores an item: inner product (ComiRec), or cosine, both
    # sides L2-normalised (then loss.temperature sets the logits' scale).
    score: Literal["dot", "cosine"] = "dot"
    # Dropout on the history's item embeddings and inside the extractor
    # (attention weights, SASRec's blocks); training only.
    dropout: float = 0.0
    # Interest 0 becomes an anchor trained on every target, and validation chooses
    # whether the model serves it alone or all K interests (multi-interest models,
    # K > 1): one setting for data that rewards one interest and data that rewards several.
    choose_interests: bool = False
    # sasrec: causal self-attention blocks and heads (heads must divide d).
    transformer_layers: int = 2
    transformer_heads: int = 1


@dataclasses.dataclass
class DiffusionConfig:
    """DMI's interest refiner; every field is a row of docs/method.md's decision table."""
    # rho: share of the d dimensions that the forward process noises (a fresh
    # random mask per example); 0 turns the refiner off (DMI = its backbone).
    noise_dims_ratio: float = 0.5
    # s: linear beta schedule from s*1e-4 to s*2e-2; 0 = no noise, refiner kept.
    noise_scale: float = 1.0
    # T: training steps t ~ Uniform{1..T}.
    steps: int = 20
    # Denoiser: cross-attention blocks over the (pruned) history, or an MLP.
    denoiser: Literal["attention", "mlp"] = "attention"
    layers: int = 1
    heads: int = 2
    ffn_factor: int = 2
    # r: history items each interest keeps (top-r by the extractor's attention;
    # re-ranked against the current estimate at every inference step); null = all.
    keep_items: int | None = None
    # How the refined vector meets the coarse one: a per-dimension gate,
    # or u = v0 + sum_weight * v0_hat.
    combine: Literal["gate", "sum"] = "gate"
    sum_weight: float = 1.0
    # mu: weight of ||v0_hat - stop_grad(v0)||^2 next to the retrieval loss.
    recon_weight: float = 0.1
    # Weight of the retrieval loss on the coarse interest v0 itself, next to the one on u.
    backbone_loss_weight: float = 0.0
    # Initial bias of the gate: sigma(b) is the starting share of the coarse interest.
    gate_bias: float = 0.0
    # Which interests a training step refines: the one the hard readout picks for
    # the target (chosen), or all K, the readout then picking among the refined
    # ones as retrieval does at inference (all; K times the refiner's training work).
    train_interests: Literal["chosen", "all"] = "chosen"
    # S reverse (DDIM) steps at inference from T' (null = T // 4);
    # S = 0 returns the coarse interests.
    infer_steps: int = 1
    infer_start: int | None = None
    # Dropout inside the denoiser (attention weights and block outputs); training only.
    dropout: float = 0.0


@dataclasses.dataclass
class LossConfig:
    """The retrieval loss (see ``losses.py``)."""

    # sampled_softmax: shared negatives per batch over the whole item table (ComiRec).
    # full_softmax: every item of the catalogue is a negative (exact; for catalogues
    # where a [batch, items] logit matrix fits).
    # in_batch: the other targets of the batch are the negatives (TFRS Retrieval).
    kind: Literal["sampled_softmax", "full_softmax", "in_batch"] = "sampled_softmax"
    # Negatives per batch; ComiRec used 10 x batch size.
    num_negatives: int = 1280
    sampler: Literal["log_uniform", "uniform"] = "log_uniform"
    # Distinct negatives (ComiRec) or draws with replacement (REMI's PyTorch port).
    unique_negatives: bool = True
    logq_correction: bool = True
    remove_accidental_hits: bool = True
    temperature: float = 1.0
    # REMI's interest-aware hard negatives (Xie et al., RecSys 2023): each negative's
    # term in the softmax is reweighted by exp(beta * logit) / mean(exp(beta * logit));
    # 0 = off (sampled_softmax and full_softmax).
    hard_negative_beta: float = 0.0
    # REMI's routing regularisation: lambda * sum over users and interests of the
    # squared variance of each interest's attention over the L positions (0 = off).
    routing_weight: float = 0.0


@dataclasses.dataclass
class TrainConfig:
    """Optimisation, early stopping and reproducibility."""

    batch_size: int = 128
    learning_rate: float = 0.001
    # Decoupled weight decay (AdamW; Loshchilov & Hutter) on every trainable weight,
    # the item table included; 0 = plain Adam.
    weight_decay: float = 0.0
    # Learning rate: linear warm-up over warmup_steps, then constant or a cosine
    # decay to 0 at the step budget (max_steps, or max_epochs).
    warmup_steps: int = 0
    lr_schedule: Literal["constant", "cosine"] = "constant"
    # Validation Recall@50 is measured every `steps_per_eval` steps (one Keras "epoch").
    steps_per_eval: int = 500
    max_steps: int = 20000
    # Stop after this many evaluations without a better validation Recall@50.
    patience: int = 3
    # Budgets in passes over the training targets instead of steps: when set, they
    # replace steps_per_eval and max_steps (an epoch is ceil(targets / batch_size)
    # steps; with data.training_targets: random, a target is a user).
    epochs_per_eval: float | None = None
    max_epochs: float | None = None
    seed: int = 0
    eval_batch_size: int = 256
    # Whether Keras compiles the train step with XLA (2x slower on 2 CPU cores, measured).
    jit_compile: bool = False
    # Train steps run per tf.function call: removes per-step Python and callback
    # overhead, which is large next to a ~10 ms step (+15% measured for ComiRec-SA).
    steps_per_execution: int = 25
    # Steps between fault-tolerance checkpoints (RUN_DIR/backup: weights, optimizer
    # state, data position); must divide steps_per_eval; null = steps_per_eval.
    checkpoint_steps: int | None = None
    # adam: Keras Adam (a sparse gradient still decays every row of the item table's
    # slots, O(items x d) per step); lazy_adam: only the rows a batch touched (TF
    # Addons' LazyAdam), the one for million-item catalogues.
    optimizer: Literal["adam", "lazy_adam"] = "adam"
    # 0 = off. Otherwise validation, the selected checkpoint and so the export use
    # an exponential moving average of the weights, updated every step with this
    # momentum (0.999 averages about the last 1,000 steps). It touches every row of
    # the item table each step, so it is for catalogues that fit that cost.
    ema_momentum: float = 0.0
    # A warm-started run (train --warm-start) trains on what its source has not seen
    # (new: targets newer than the source run's newest training interaction; the
    # histories still reach back) or on all the data again (all). docs/lifecycle.md.
    warm_start_targets: Literal["new", "all"] = "new"


@dataclasses.dataclass
class DistributeConfig:
    """How training spreads over devices and machines (``dmi_tf/distribute.py``)."""

    # default: one device. mirrored: every local GPU (the CPU without one).
    # multi_worker: MultiWorkerMirroredStrategy over the TF_CONFIG cluster.
    # parameter_server: ParameterServerStrategy; the chief coordinates, the
    # item table is sharded across the ps tasks.
    strategy: Literal["default", "mirrored", "multi_worker", "parameter_server"] = "default"
    # multi_worker all-reduce: auto, ring (gRPC, CPU) or nccl (GPU).
    communication: Literal["auto", "ring", "nccl"] = "auto"
    # parameter_server: shards of the item table (and its optimizer slots);
    # null = one per ps task.
    embedding_shards: int | None = None
    # Threads of TensorFlow's intra-op pool (one op split over cores); null = TF's
    # default, one per core. A model of many small ops on few cores trains faster
    # with 1: the ops then run side by side (inter-op pool) instead of each paying
    # to split (2 cores, MovieLens-100k: DMI 1.3-2x end to end; ComiRec-SA, with
    # fewer and larger ops, 0.76-0.92x; docs/experiments.md). Process-wide, set before
    # TensorFlow starts; speed only.
    intra_op_threads: int | None = None


@dataclasses.dataclass
class EvalConfig:
    """Evaluation cut-offs and the catalogue block size of the exact top-K."""

    cutoffs: list[int] = dataclasses.field(default_factory=lambda: [20, 50])
    # Model selection uses validation recall at this cut-off.
    selection_metric: str = "recall@50"
    block_size: int = 65536
    # λ of ComiRec's controllable aggregation (needs item categories); 0 = plain merge by score.
    diversity_weight: float = 0.0


@dataclasses.dataclass
class Config:
    """A complete run: data, model, loss, training and evaluation."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = dataclasses.field(default_factory=DiffusionConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    distribute: DistributeConfig = dataclasses.field(default_factory=DistributeConfig)

    def validate(self, source: str = "config") -> Config:
        """Checks value ranges that types cannot express; returns self."""
        checks = [
            (self.data.max_length >= 1, "data.max_length", "must be >= 1"),
            (self.data.min_target_position >= 1, "data.min_target_position", "must be >= 1"),
            (self.model.embedding_dim >= 1, "model.embedding_dim", "must be >= 1"),
            (self.model.num_interests >= 1, "model.num_interests", "must be >= 1"),
            (self.model.routing_iterations >= 1, "model.routing_iterations", "must be >= 1"),
            (self.model.attention_hidden_factor >= 1, "model.attention_hidden_factor",
             "must be >= 1"),
            (self.model.readout_power > 0, "model.readout_power", "must be > 0"),
            (self.model.knn_neighbors is None or self.model.knn_neighbors >= 1,
             "model.knn_neighbors", "must be null or >= 1"),
            (0.0 <= self.diffusion.noise_dims_ratio <= 1.0, "diffusion.noise_dims_ratio",
             "must be in [0, 1]"),
            (self.diffusion.noise_scale >= 0, "diffusion.noise_scale", "must be >= 0"),
            (self.diffusion.noise_scale * 2e-2 < 1.0, "diffusion.noise_scale",
             "must keep every beta below 1 (s * 0.02 < 1)"),
            (self.diffusion.steps >= 1, "diffusion.steps", "must be >= 1"),
            (self.diffusion.layers >= 1, "diffusion.layers", "must be >= 1"),
            (self.diffusion.heads >= 1 and self.model.embedding_dim % self.diffusion.heads == 0,
             "diffusion.heads", "must be >= 1 and divide model.embedding_dim"),
            (self.diffusion.ffn_factor >= 0, "diffusion.ffn_factor", "must be >= 0 (0 = no FFN)"),
            (self.diffusion.keep_items is None or self.diffusion.keep_items >= 1,
             "diffusion.keep_items", "must be null (all) or >= 1"),
            (self.diffusion.recon_weight >= 0, "diffusion.recon_weight", "must be >= 0"),
            (self.diffusion.backbone_loss_weight >= 0, "diffusion.backbone_loss_weight",
             "must be >= 0"),
            (self.diffusion.infer_steps >= 0, "diffusion.infer_steps", "must be >= 0"),
            (self.diffusion.infer_start is None
             or 0 <= self.diffusion.infer_start <= self.diffusion.steps,
             "diffusion.infer_start", "must be null (steps // 4) or in [0, diffusion.steps]"),
            (0.0 <= self.model.dropout < 1.0, "model.dropout", "must be in [0, 1)"),
            (not self.model.choose_interests
             or (self.model.num_interests > 1
                 and self.model.name in ("comirec_sa", "comirec_dr", "mind", "dmi")),
             "model.choose_interests", "needs a multi-interest model (comirec_sa, comirec_dr, "
             "mind or dmi) with model.num_interests > 1"),
            (not self.model.choose_interests or self.model.name != "dmi"
             or self.diffusion.backbone_loss_weight > 0, "model.choose_interests",
             "needs diffusion.backbone_loss_weight > 0 for dmi (that loss trains the anchor)"),
            (0.0 <= self.diffusion.dropout < 1.0, "diffusion.dropout", "must be in [0, 1)"),
            (self.model.transformer_layers >= 1, "model.transformer_layers", "must be >= 1"),
            (self.model.transformer_heads >= 1
             and self.model.embedding_dim % self.model.transformer_heads == 0,
             "model.transformer_heads", "must be >= 1 and divide model.embedding_dim"),
            (self.loss.num_negatives >= 1, "loss.num_negatives", "must be >= 1"),
            (self.loss.hard_negative_beta >= 0, "loss.hard_negative_beta", "must be >= 0"),
            (self.loss.hard_negative_beta == 0 or self.loss.kind != "in_batch",
             "loss.hard_negative_beta", "needs loss.kind sampled_softmax or full_softmax"),
            (self.loss.routing_weight >= 0, "loss.routing_weight", "must be >= 0"),
            (self.loss.routing_weight == 0
             or self.model.name in ("comirec_sa", "comirec_dr", "mind", "dmi"),
             "loss.routing_weight", "needs a multi-interest model (comirec_sa, comirec_dr, "
             "mind or dmi): it regularises how interests weigh history items"),
            (self.loss.temperature > 0, "loss.temperature", "must be > 0"),
            (self.eval.diversity_weight >= 0, "eval.diversity_weight", "must be >= 0"),
            (self.train.batch_size >= 1, "train.batch_size", "must be >= 1"),
            (self.train.learning_rate > 0, "train.learning_rate", "must be > 0"),
            (self.train.weight_decay >= 0, "train.weight_decay", "must be >= 0"),
            (self.train.weight_decay == 0 or self.train.optimizer == "adam",
             "train.weight_decay", "needs train.optimizer adam (AdamW decays every row; "
             "lazy_adam updates only the rows a batch touches)"),
            (self.train.warmup_steps >= 0, "train.warmup_steps", "must be >= 0"),
            (self.train.epochs_per_eval is None or self.train.epochs_per_eval > 0,
             "train.epochs_per_eval", "must be null or > 0"),
            (self.train.max_epochs is None or self.train.max_epochs > 0,
             "train.max_epochs", "must be null or > 0"),
            (self.train.steps_per_eval >= 1, "train.steps_per_eval", "must be >= 1"),
            (self.train.max_steps >= 1, "train.max_steps", "must be >= 1"),
            (self.train.steps_per_execution >= 1, "train.steps_per_execution", "must be >= 1"),
            (self.train.patience >= 1, "train.patience", "must be >= 1"),
            (0.0 <= self.train.ema_momentum < 1.0, "train.ema_momentum",
             "must be in [0, 1) (0 = no moving average)"),
            (self.train.checkpoint_steps is None
             or (self.train.checkpoint_steps >= 1
                 and self.train.steps_per_eval % self.train.checkpoint_steps == 0),
             "train.checkpoint_steps", "must be null or a divisor of train.steps_per_eval"),
            (self.distribute.embedding_shards is None or self.distribute.embedding_shards >= 1,
             "distribute.embedding_shards", "must be null (one per ps task) or >= 1"),
            (self.distribute.intra_op_threads is None or self.distribute.intra_op_threads >= 1,
             "distribute.intra_op_threads", "must be null (one per core) or >= 1"),
            (self.eval.block_size >= max(self.eval.cutoffs, default=1), "eval.block_size",
             "must be >= the largest cut-off"),
            (bool(self.eval.cutoffs) and all(c >= 1 for c in self.eval.cutoffs), "eval.cutoffs",
             "must be a non-empty list of positive integers"),
            (self.eval.selection_metric in _metric_names(self.eval.cutoffs),
             "eval.selection_metric", f"must be one of {_metric_names(self.eval.cutoffs)}"),
            (self.data.synthetic.min_interests <= self.data.synthetic.max_interests
             <= self.data.synthetic.num_topics, "data.synthetic.max_interests",
             "needs min_interests <= max_interests <= num_topics"),
            (5 <= self.data.synthetic.min_length <= self.data.synthetic.max_length,
             "data.synthetic.min_length", "needs 5 <= min_length <= max_length"),
            (self.data.synthetic.num_items >= self.data.synthetic.num_topics >= 1,
             "data.synthetic.num_items", "must be >= num_topics >= 1"),
            (0.0 <= self.data.synthetic.noise < 1.0, "data.synthetic.noise", "must be in [0, 1)"),
            (0.0 <= self.data.synthetic.stickiness <= 1.0, "data.synthetic.stickiness",
             "must be in [0, 1]"),
        ]
        for ok, key, message in checks:
            if not ok:
                raise ConfigError(f"{source}: {key} {message}.")
        return self


def _metric_names(cutoffs) -> list[str]:
    return [f"{m}@{c}" for c in cutoffs for m in ("recall", "hit_rate", "ndcg")]


def to_dict(config: Config) -> dict[str, Any]:
    """The config as plain data, for writing into a run directory."""
    return dataclasses.asdict(config)


def differences(saved: Config, given: Config) -> list[str]:
    """``"key: <saved> there, <given> here"`` for every setting that differs, but the
    ``distribute`` section (a run may resume, or be reused, on another cluster)."""
    def flat(data, prefix=""):
        for key, value in data.items():
            if isinstance(value, dict):
                yield from flat(value, f"{prefix}{key}.")
            else:
                yield prefix + key, value

    a, b = dict(flat(to_dict(saved))), dict(flat(to_dict(given)))
    return [f"{key}: {a.get(key)!r} there, {b.get(key)!r} here" for key in sorted(set(a) | set(b))
            if not key.startswith("distribute.") and a.get(key) != b.get(key)]


def from_dict(data: Any, source: str = "<dict>") -> Config:
    """Builds a checked :class:`Config` from nested plain data."""
    return _build(Config, data, source, prefix="").validate(source)


def load(path: str | os.PathLike | None = None, overrides: list[str] | tuple = ()) -> Config:
    """Loads a YAML config (or the defaults when ``path`` is None) and applies overrides.

    Raises:
      ConfigError: missing or unreadable file, invalid YAML, an unknown key, a
        wrong type, or a value out of range; the message names the key and file.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = os.fspath(path)
        if not os.path.isfile(source):
            raise ConfigError(
                f"config file {source!r} does not exist; pass one of the files in configs/ "
                "or omit --config to use the built-in defaults.")
        with open(source, encoding="utf-8") as f:
            try:
                loaded = yaml.safe_load(f)
            except yaml.YAMLError as e:
                raise ConfigError(f"{source}: invalid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of sections "
                              f"({', '.join(f.name for f in dataclasses.fields(Config))}).")
        data = loaded
    for override in overrides:
        _apply_override(data, override)
    label = source if not overrides else f"{source} with overrides {list(overrides)}"
    return from_dict(data, label)


def _apply_override(data: dict[str, Any], override: str) -> None:
    key, sep, raw_value = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} is not of the form section.key=value "
                          "(for example model.num_interests=8).")
    try:
        value = yaml.safe_load(raw_value)
    except yaml.YAMLError:
        value = raw_value
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {part!r} is a value, not a section.")
        node = child
    node[parts[-1]] = value


def _build(cls, data: Any, source: str, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'the top level'} must be a mapping, "
                          f"got {type(data).__name__}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {prefix + str(unknown[0])!r}; valid keys in "
            f"{prefix.rstrip('.') or 'the top level'} are: {', '.join(fields)}.")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, source, prefix + name)
    return cls(**kwargs)


def _coerce(hint, value: Any, source: str, key: str):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value if value is not None else {}, source, key + ".")
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, source, key)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{source}: {key} is {value!r}; it must be one of "
                              f"{', '.join(map(str, allowed))}.")
        return value
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}.")
        return [_coerce(item_hint, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # YAML 1.1 reads "1e-3" (no dot) as a string; accept what users obviously meant.
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, float, str, bool) and (
            not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{source}: {key} must be {hint.__name__}, got {value!r} "
                          f"({type(value).__name__}).")
    return value


def dump_yaml(config: Config) -> str:
    """The config as YAML that :func:`load` reads back to an equal config."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)
