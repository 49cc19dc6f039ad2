"""hsg as a library: every step the CLI runs, as a function that returns what it computed.

    from hsg import api

    encoder = api.load_encoder("models/nt-v2-50m")
    sae = api.load_sae("sae/L6")
    with api.connect() as graph:
        summary = api.ingest("loci.tsv", encoder, sae, connection=graph)
        run = api.pagerank(["cisplatin_binding", "non_binding"], connection=graph)
        report = api.targets("cisplatin_binding", "non_binding", connection=graph)
        graph.query("top_features_for_label", label="cisplatin_binding", sae=None, limit=10)

Functions never print: they return dataclasses (or DataFrames), take ``log``/``warn``/
``progress`` callbacks, and raise typed errors (`ValueError` subclasses naming the file,
line or option at fault; `DatabaseError` saying what to do). Models and SAEs may be given
as paths or as loaded objects. Every function that pairs an encoder with an SAE runs the
same `check_compatible` first. The CLI (`hsg.cli`) is a thin layer over these functions.
See docs/api.md for a worked example.
"""

from __future__ import annotations

from hsg.api._analysis import pagerank, targets, topology
from hsg.api._concepts import atlas, concepts, motifs
from hsg.api._correlate import correlate
from hsg.api._ingest import ingest, validate_regions
from hsg.api._load import (
    Connection,
    connect,
    connection_for,
    iter_regions,
    load_encoder,
    load_sae,
    read_regions,
)
from hsg.api._models import EmbedSummary, embed, embed_to_file, make_tiny_model
from hsg.api._remote import ServiceClient, ServiceError, remote_ingest
from hsg.api._sae import (
    TRAIN_DEFAULTS,
    cache_activations,
    evaluate_sae,
    export_sae,
    import_sae,
    open_activation_source,
    train_sae,
)
from hsg.api._shards import encode_to_shards, ingest_ray, load_shards
from hsg.api._steer import (
    ClassifierRun,
    SteerReport,
    depmap,
    evaluate_classifier,
    steer,
    train_classifier,
)
from hsg.sae.compat import Compatibility, IncompatibleError, check_compatible

__all__ = [
    "TRAIN_DEFAULTS",
    "ClassifierRun",
    "Compatibility",
    "Connection",
    "EmbedSummary",
    "IncompatibleError",
    "ServiceClient",
    "ServiceError",
    "SteerReport",
    "atlas",
    "cache_activations",
    "check_compatible",
    "concepts",
    "connect",
    "connection_for",
    "correlate",
    "depmap",
    "embed",
    "embed_to_file",
    "encode_to_shards",
    "evaluate_classifier",
    "evaluate_sae",
    "export_sae",
    "import_sae",
    "ingest",
    "ingest_ray",
    "iter_regions",
    "load_encoder",
    "load_sae",
    "load_shards",
    "make_tiny_model",
    "motifs",
    "open_activation_source",
    "pagerank",
    "read_regions",
    "remote_ingest",
    "steer",
    "targets",
    "topology",
    "train_classifier",
    "train_sae",
    "validate_regions",
]
