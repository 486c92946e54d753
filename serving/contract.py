"""The export <-> serving contract: names, files and statuses both sides rely on.

``python -m export`` writes SavedModels with these signatures, tensors and
warm-up file; ``serving.server`` loads and answers them as TF-Serving does;
``serving.client`` calls them. A name changed here changes all three.

Why it lives in ``serving``: the contract is the protocol a model server
speaks (TF-Serving's API and this export's signatures on it), and the export
is what conforms to it. ``serving`` must stay installable and testable alone,
importing neither ``dmi_tf`` nor ``export`` (``export/__init__.py`` imports
``dmi_tf``), so the definition cannot live on the export side; and a third
top-level package would make a client install need two. This module imports
nothing, so the export importing it pulls in none of the serving machinery:
it is the one place ``export`` reaches into a later package, and it is a leaf.
"""

# --- signatures: every input and output has a leading batch dimension ------------------

#: TF-Serving's default key; the same function as ``TOPK``.
SERVING_DEFAULT = "serving_default"
TOPK = "topk"
USER_INTERESTS = "user_interests"
EXPLAIN = "explain"
SIGNATURES = (SERVING_DEFAULT, TOPK, USER_INTERESTS, EXPLAIN)

#: The one input of every signature: raw item ids, string ``[batch, None]``, oldest first.
HISTORY = "history"
#: Padding in ``history``, allowed anywhere. TF-Serving's ``pad_variable_length_inputs``
#: pads a request with its tensor's first element, so every request starts its rows with it.
PADDING = ""

# Outputs of TOPK (and SERVING_DEFAULT).
ITEM_IDS = "item_ids"  # string [batch, k], PADDING in empty slots
SCORES = "scores"  # float32 [batch, k], -inf in empty slots
KNOWN_IDS = "known_ids"  # int32 [batch]: history ids the vocabulary knows (PADDING not counted)
# Outputs of USER_INTERESTS.
INTERESTS = "interests"  # float32 [batch, K, d], refined
COARSE_INTERESTS = "coarse_interests"  # float32 [batch, K, d], the backbone's
# Outputs of EXPLAIN.
ITEMS = "items"  # string [batch, K, L], the history item behind each weight
WEIGHTS = "weights"  # float32 [batch, K, L]

OUTPUTS = {
    SERVING_DEFAULT: (ITEM_IDS, SCORES, KNOWN_IDS),
    TOPK: (ITEM_IDS, SCORES, KNOWN_IDS),
    USER_INTERESTS: (INTERESTS, COARSE_INTERESTS),
    EXPLAIN: (ITEMS, WEIGHTS),
}

# --- raw item ids -----------------------------------------------------------------------

#: Raw item ids are text and a TF-Serving string is bytes: wherever an id becomes bytes
#: (requests, warm-up records, the vocabulary asset the signatures look ids up in) it is
#: this encoding, so any id a dataset holds is found again.
ID_ENCODING = "utf-8"


def encode_id(item_id: str | bytes) -> bytes:
    """A raw item id as it travels (bytes are taken as already encoded)."""
    return item_id if isinstance(item_id, bytes) else item_id.encode(ID_ENCODING)


def decode_id(raw: bytes, errors: str = "strict") -> str:
    """A raw item id from the bytes a signature returned."""
    return raw.decode(ID_ENCODING, errors)


# --- files inside a version directory ---------------------------------------------------

ASSETS_EXTRA = "assets.extra"
#: TF-Serving replays this TFRecord file of PredictionLog records before it serves a version.
WARMUP_FILE = f"{ASSETS_EXTRA}/tf_serving_warmup_requests"
#: TF-Serving refuses a version whose warm-up file holds more records than this.
MAX_WARMUP_RECORDS = 1000

# --- statuses (gRPC code names; each side maps them to its own library's enum) ----------

#: The only status a client retries: server starting or restarting, batch queue full.
RETRYABLE = "UNAVAILABLE"
#: Statuses of a request that is wrong as sent (a command line exits 2 on them, not 1).
REQUEST_ERRORS = ("INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION")
#: GetModelMetadata's one supported field.
SIGNATURE_DEF_FIELD = "signature_def"
#: REST: gRPC code name -> HTTP status (TF-Serving's mapping). Where several codes share an
#: HTTP status the first one listed is what a REST client reads back.
HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "UNAUTHENTICATED": 401,
}
#: REST: the JSON key of an error answer's message.
REST_ERROR_KEY = "error"
