"""A trained run -> a TF-Serving model version, published atomically.

``export_run`` writes ``MODEL_BASE/<name>/<version>/``:

* the SavedModel (``saved_model.pb``, ``variables/``, ``assets/vocabulary.txt``)
  with the signatures of :mod:`export.serving_module`;
* ``assets.extra/tf_serving_warmup_requests``: replay-checked warm-up records;
* ``assets.extra/item_embeddings.npy`` (float32 ``[items, d]``) and
  ``assets.extra/item_ids.txt`` (the raw id of each row): the item table for
  an external index, next to ``user_interests``;
* ``assets.extra/export.json``: what was exported (run, index, k, shapes,
  custom ops needed);

and then ``MODEL_BASE/models.config`` and ``MODEL_BASE/batching_parameters.txt``.

Atomicity (``dmi_tf.io_utils.published_directory``): everything is written into
``MODEL_BASE/<name>/.<version>.partial-<host>-<pid>-*`` (not all digits, so
TF-Serving's file-system source ignores it), checked, and renamed to ``<version>``
in one step. A failure or an interrupt removes the
temporary directory; a killed process can only leave that hidden directory
behind, never a version directory, and the next export on that host removes it.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import json
import os
import re
import shutil
import socket
import tempfile
import time

import numpy as np
import tensorflow as tf

from dmi_tf.data.pipeline import evaluation_arrays
from dmi_tf.errors import UserError
from dmi_tf.index import IndexConfig, build_index
from dmi_tf.io_utils import atomic_write_text, published_directory
from dmi_tf.raw_ids import (
    ITEM_EMBEDDINGS_FILE,
    ITEM_IDS_FILE,
    write_item_embeddings,
    write_vocabulary_file,
)
from dmi_tf.retrieval import retrieve
from dmi_tf.runs import load_run
from dmi_tf.warm_start import read_record
from export import gpu_check, tf_serving
from export.serving_module import ServingModule, decode_ids, encode_ids
from serving import contract

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

SCANN_CAVEAT = (
    "this export uses ScaNN custom ops (op namespace 'Scann'): stock TF-Serving "
    "(tensorflow/serving, CPU or GPU images) cannot load it and reports \"Op type not "
    "registered 'Scann>...'\". Serve it from a model server built with ScaNN's ops (e.g. "
    "the google/tf-serving-scann image, CPU only) or from Python after `import scann`; "
    "for GPU serving export with --index exact (the default).")


@dataclasses.dataclass
class ServingOptions:
    """How TF-Serving is told to serve the export (models.config, batching)."""

    # base_path written into models.config: where MODEL_BASE/<name> is seen by
    # the server (the README's docker line mounts MODEL_BASE at /models).
    base_path_prefix: str = "/models"
    max_batch_size: int = 128
    batch_timeout_micros: int = 1000
    num_batch_threads: int = 4
    max_enqueued_batches: int = 100
    # An existing batching_parameters.txt may be hand-tuned: it is kept unless this is set
    # (the command line sets it when --max-batch-size or --batch-timeout-micros is given).
    replace_batching: bool = False


@dataclasses.dataclass
class ExportResult:
    path: str
    version: int
    warmup_records: int
    index: dict
    host_only_ops: dict


def _log(message: str) -> None:
    print(message, flush=True)


def versions(model_dir: str) -> list[int]:
    """The version directories (all-digit names) under ``model_dir``, ascending."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(n) for n in os.listdir(model_dir)
                  if n.isdigit() and os.path.isdir(os.path.join(model_dir, n)))


def _partial_tag() -> str:
    # Host and pid name the writer, so a later export can tell an abandoned
    # directory (its writer is dead) from one still being written.
    return f".partial-{socket.gethostname()}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_abandoned_partials(model_dir: str) -> list[str]:
    """Removes the temporary directories of exports killed on this host; returns them.

    Only directories whose writer ran on this host and is no longer running:
    an export on another machine sharing the folder, or one still running
    here, is left alone.
    """
    pattern = re.compile(rf"\.\d+\.partial-{re.escape(socket.gethostname())}-(\d+)-")
    removed = []
    for entry in sorted(os.listdir(model_dir)):
        match = pattern.match(entry)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(os.path.join(model_dir, entry), ignore_errors=True)
            removed.append(entry)
            _log(f"removed {entry}, left by an export that was killed")
    return removed


def check_servable(model) -> None:
    """Raises UserError unless ``model`` has the interface the signatures call."""
    needed = ("interests", "coarse_interests", "explain", "candidate_embeddings")
    missing = [m for m in needed if not callable(getattr(model, m, None))]
    if missing:
        raise UserError(
            f"model {getattr(model, 'name', type(model).__name__)!r} cannot be exported: it has "
            f"no {', '.join(missing)} (MostPopular and item-kNN are evaluation baselines without "
            "a user tower or item embeddings). Export a trained embedding model: youtube_dnn, "
            "mind, comirec_dr, comirec_sa or dmi.")


def export_run(run_dir: str, model_base: str, name: str | None = None,
               index_config: IndexConfig | None = None, version: int | None = None,
               k: int = 100, serving: ServingOptions | None = None) -> ExportResult:
    """Exports the run in ``run_dir`` as ``model_base/<name>/<version>/``.

    Args:
      run_dir: a finished ``python -m dmi_tf.train`` run.
      model_base: TF-Serving's model base directory (created if missing).
      name: the served model name (default: the run's ``model.name``).
      index_config: exact (default; GPU serving) or ScaNN.
      version: the version number (default: newest existing + 1, or 1).
      k: items returned per user by ``topk``.
      serving: models.config and batching settings.

    Raises:
      UserError: a bad run, name, version or k, or a model without the
        export interface; ``tf_serving.ExportError`` when a check of the
        artifacts fails. Nothing is published then.
    """
    index_config = index_config or IndexConfig()
    serving = serving or ServingOptions()
    run = load_run(run_dir)
    model = run.model
    check_servable(model)
    # This copy only serves: per-request recomputation of weight-only products is waste.
    fold = getattr(model, "fold_for_inference", None)
    if fold is not None:
        fold()
    name = name or run.config.model.name
    if not _NAME.match(name):
        raise UserError(f"--name {name!r}: use letters, digits, '_', '.' or '-', starting with a "
                        "letter or digit (it becomes a directory and the served model name).")
    vocabulary = run.vocabulary
    table = np.asarray(tf.convert_to_tensor(model.candidate_embeddings()), np.float32)
    num_items, dim = table.shape
    length = run.config.data.max_length
    probe = model.interests(tf.zeros([1, length], tf.int32))
    if probe.shape[-1] != dim:
        raise UserError(f"model interests have size {probe.shape[-1]} but its item table has "
                        f"{dim} columns; an exported top-K needs them equal.")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_items - 1:
        raise UserError(f"--k {k}: must be between 1 and the {num_items - 1} items of the run.")

    model_dir = os.path.join(model_base, name)
    existing = versions(model_dir)
    if version is None:
        version = (existing[-1] + 1) if existing else 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise UserError(f"--version {version!r}: must be a positive integer.")
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final):
        raise UserError(f"{final} already exists; TF-Serving versions are immutable. Pass a new "
                        f"--version (newest is {existing[-1] if existing else 'none'}) or omit it.")
    try:
        os.makedirs(model_dir, exist_ok=True)
        if not os.access(model_dir, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), model_dir)
    except OSError as e:  # unwritable, below a file: the user's path, not a bug
        raise UserError(f"cannot write to --out {model_base!r}: {e.strerror or e}"
                        f"{f' ({e.filename})' if e.filename else ''}; choose a directory you "
                        "can write.") from None
    # What is written beside the version is checked before it is published: a failure after
    # publishing would leave the version out and the command saying it failed.
    config_path = os.path.join(model_base, "models.config")
    tf_serving.read_models_config(config_path)
    batching_path = os.path.join(model_base, tf_serving.BATCHING_FILE)
    batching_text = tf_serving.batching_parameters_text(
        serving.max_batch_size, serving.batch_timeout_micros, serving.num_batch_threads,
        serving.max_enqueued_batches)

    _log(f"exporting {run_dir} ({run.config.model.name}, {num_items - 1:,} items, d={dim}, "
         f"K={probe.shape[1]}, L={length}) as {name} version {version}, top-{k} by "
         f"{index_config.kind} index")
    t0 = time.perf_counter()
    # The model's table itself (a variable): the "rows" layout then stores it once.
    index = build_index(model.candidate_embeddings(), index_config, k)
    _log(f"index: {index.describe()} built in {time.perf_counter() - t0:.1f}s")
    if index.op_namespaces:
        _log("warning: " + SCANN_CAVEAT)

    remove_abandoned_partials(model_dir)
    try:
        with published_directory(final, prefix=f".{version}{_partial_tag()}") as tmp:
            result = _write_version(tmp, run_dir, run, model, index, vocabulary, table, name,
                                    version, k, serving)
    except FileExistsError as e:
        if e.filename != final:
            raise
        raise UserError(f"{final} appeared during the export (another export took the number); "
                        "pass a new --version.") from None
    result.path = final

    try:
        tf_serving.update_models_config(config_path, name,
                                        f"{serving.base_path_prefix.rstrip('/')}/{name}")
    except (UserError, OSError) as e:  # changed or unwritable since it was checked
        raise UserError(f"{final} is published, but {config_path} was not updated ({e}); add "
                        f"model {name!r} to it by hand.") from None
    if serving.replace_batching or not os.path.exists(batching_path):
        atomic_write_text(batching_path, batching_text)
        _log(f"published {final}; wrote {config_path} and {tf_serving.BATCHING_FILE}")
    else:
        _log(f"published {final}; wrote {config_path}; kept the existing "
             f"{tf_serving.BATCHING_FILE} (pass --max-batch-size or --batch-timeout-micros to "
             "replace it)")
    return result


def _write_version(tmp, run_dir, run, model, index, vocabulary, table, name, version, k,
                   serving) -> ExportResult:
    length = run.config.data.max_length
    with tempfile.TemporaryDirectory() as scratch:
        module = ServingModule(model, index, write_vocabulary_file(vocabulary, scratch),
                               len(vocabulary), length, k)
        options = tf.saved_model.SaveOptions(namespace_whitelist=list(index.op_namespaces))
        tf.saved_model.save(module, tmp, signatures=module.signatures(), options=options)

    histories = _sample_histories(run, length)
    strings = np.asarray(vocabulary, dtype=object)[histories]
    records = tf_serving.warmup_records(
        name, strings, tf_serving.allowed_batch_sizes(serving.max_batch_size), contract.SIGNATURES)
    tf_serving.write_warmup(os.path.join(tmp, contract.WARMUP_FILE), records)
    loaded = tf.saved_model.load(tmp)
    count = tf_serving.replay_warmup(tmp, loaded)
    _log(f"warm-up: {count} records replayed through the SavedModel")
    _check_parity(loaded, model, index, table, histories, strings, vocabulary, k)

    extra = os.path.join(tmp, contract.ASSETS_EXTRA)
    # The item table for an external index: row i of the embeddings is the raw id on line i.
    write_item_embeddings(extra, table, vocabulary)

    host_only = {}
    if not index.op_namespaces:
        host_only = {s: gpu_check.ops_without_gpu_kernel(tmp, s) for s in contract.SIGNATURES}
        host_only = {s: ops for s, ops in host_only.items() if ops}
        if host_only:
            _log(f"warning: ops without a GPU kernel (they will run on the CPU): {host_only}")
        else:
            _log("GPU check: every op of every signature has a GPU kernel, bar the vocabulary "
                 "lookups at its edges")
    probe = model.interests(tf.zeros([1, length], tf.int32))
    info = {
        "name": name, "version": version, "run": os.path.abspath(run_dir),
        "checkpoint": run.checkpoint,
        "warm_start": read_record(run_dir),
        "model": run.config.model.name,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "tensorflow": tf.__version__, "k": k, "num_items": len(vocabulary) - 1,
        "num_interests": int(probe.shape[1]), "embedding_dim": int(table.shape[1]),
        "max_length": length, "index": index.describe(), "exact": index.is_exact(),
        "requires_custom_ops": list(index.op_namespaces), "signatures": list(contract.SIGNATURES),
        "warmup_records": count,
        "item_embeddings": f"{contract.ASSETS_EXTRA}/{ITEM_EMBEDDINGS_FILE} rows = "
                           f"{contract.ASSETS_EXTRA}/{ITEM_IDS_FILE}",
    }
    with open(os.path.join(extra, "export.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    return ExportResult(tmp, version, count, index.describe(), host_only)


def _sample_histories(run, length: int, users: int = 128) -> np.ndarray:
    """Real histories int ``[users, L]`` from the validation split (warm-up and parity check)."""
    history, _, _ = evaluation_arrays(run.dataset.valid, length)
    return history[:users]


def topk_differences(got_ids, got_scores, want_ids, want_scores, tol: float = 1e-5) -> list[str]:
    """Where two top-k answers differ beyond float round-off, as messages (empty = the same).

    Scores must agree slot by slot within ``tol`` (relative, at least absolute
    ``tol``). Ids must agree too, except that items whose scores tie within
    ``tol`` may come in either order: the saved graph and eager Python may
    round the last bit differently, which reorders near-ties (also across the
    k-th slot, where a tied item outside the list may take the place of one
    inside).
    """
    problems = []
    limit = tol * np.maximum(1.0, np.abs(want_scores))
    bad = ~(np.abs(got_scores - want_scores) <= limit) & ~(got_scores == want_scores)
    for u, j in zip(*np.nonzero(bad), strict=True):
        problems.append(f"user {u} slot {j}: score {got_scores[u, j]} != {want_scores[u, j]}")
    for u, j in zip(*np.nonzero(got_ids != want_ids), strict=True):
        row = list(want_ids[u])
        # The item's reference score if it is in the reference list, else the k-th score.
        reference = want_scores[u, row.index(got_ids[u, j])] if got_ids[u, j] in row else (
            want_scores[u, -1])
        if not abs(got_scores[u, j] - reference) <= tol * max(1.0, abs(reference)):
            problems.append(f"user {u} slot {j}: item {str(got_ids[u, j])!r} != "
                            f"{str(want_ids[u, j])!r}")
    return problems


def _check_parity(loaded, model, index, table, histories, strings, vocabulary, k) -> None:
    """The loaded ``topk`` must answer what the Python model does (exact index), or say why not.

    Its ids and scores must be the model's retrieval, and its ``known_ids`` each
    history's count of ids.
    """
    out = loaded.signatures[contract.TOPK](**{contract.HISTORY: tf.constant(encode_ids(strings))})
    got_ids = decode_ids(out[contract.ITEM_IDS].numpy()).astype(str)
    got_scores = out[contract.SCORES].numpy()
    # -inf marks an empty slot and nothing else; NaN or +inf is never a score.
    if not np.all(np.isfinite(got_scores) | ((got_scores == -np.inf) & (got_ids == ""))):
        bad = got_scores[~np.isfinite(got_scores)][:4].tolist()
        raise tf_serving.ExportError(
            f"the exported topk signature returns non-finite scores ({bad}...) on validation "
            "histories; nothing was published. The model's weights or its item table hold "
            "values no score can come from: train again (a lower train.learning_rate).")
    # The validation histories hold known ids and 0 (padding, "" on the wire) only.
    want_known = np.count_nonzero(histories, axis=1)
    if not np.array_equal(out[contract.KNOWN_IDS].numpy(), want_known):
        raise tf_serving.ExportError(
            f"the exported topk signature's {contract.KNOWN_IDS} "
            f"{out[contract.KNOWN_IDS].numpy()[:8].tolist()}... do not count the known ids of "
            f"validation histories ({want_known[:8].tolist()}...); nothing was published. "
            "Please report this with the run.")
    interests = model.interests(tf.constant(histories))
    if index.is_exact():
        scores, rows = retrieve(interests, table, k, block_size=index.block_size)
        want_ids = np.asarray(vocabulary, dtype=object)[np.maximum(rows.numpy(), 0)]
        want_ids[rows.numpy() < 0] = ""
        problems = topk_differences(got_ids, got_scores, want_ids.astype(str), scores.numpy())
        if problems:
            raise tf_serving.ExportError(
                "the exported topk signature does not reproduce the model's exact retrieval on "
                f"validation histories ({problems[0]}); nothing was published. Please report "
                "this with the run.")
        _log(f"parity: exported topk equals the model's retrieval on {len(histories)} "
             "validation users (ids, and scores to float tolerance)")
    else:
        _, rows = retrieve(interests, table, k)
        want = np.asarray(vocabulary, dtype=object)[rows.numpy()]
        overlap = np.mean([len(set(g) & set(w)) / k for g, w in zip(got_ids, want, strict=True)])
        _log(f"ScaNN recall@{k} against the exact index on {len(histories)} validation users: "
             f"{overlap:.4f}")

