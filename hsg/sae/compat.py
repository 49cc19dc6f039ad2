"""The one check that pairs an encoder with an SAE, used by every command that does.

An SAE's dictionary is meaningful only for the activations it was trained on: the same
checkpoint, the same layer, the same width. Fed anything else it still returns numbers, and
every graph, PageRank score and steering result built on them is quietly wrong. So ingest,
training-data caching, evaluation, classifiers, steering, depmap and correlation all call
`check_compatible` before the first sequence is encoded, and all fail the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class IncompatibleError(ValueError):
    """An encoder and an SAE (or a layer) that do not belong together; the message says why."""


class _EncoderLike(Protocol):
    model_id: str

    @property
    def num_layers(self) -> int: ...

    @property
    def hidden_size(self) -> int: ...

    @property
    def checkpoint_hash(self) -> str: ...


# Values that mean "not recorded": an SAE trained on a bare activation file, or an encoder
# built in memory and never saved, cannot be compared by hash.
_UNKNOWN = (None, "", "unsaved")


@dataclass(frozen=True)
class Compatibility:
    """What `check_compatible` established: the layer to read and whether the hash matched."""

    layer: int
    checkpoint_verified: bool
    warnings: tuple[str, ...] = ()


def check_compatible(
    encoder: _EncoderLike,
    sae,
    layer: int | None = None,
    *,
    allow_model_mismatch: bool = False,
) -> Compatibility:
    """Check that `sae` reads `layer` of `encoder`; return the layer to use.

    - the checkpoint hash recorded in the SAE equals the encoder's (unless
      ``allow_model_mismatch``, which turns the error into a warning in the result);
    - the layer given equals the SAE's own layer; without one, the SAE's layer is used;
    - the layer exists in the encoder (0 = embeddings … num_layers);
    - the encoder's width equals the SAE's ``d_in``.
    """
    cfg = sae.cfg
    warnings: list[str] = []
    recorded = cfg.encoder_checkpoint_hash
    actual = encoder.checkpoint_hash
    verified = recorded not in _UNKNOWN and actual not in _UNKNOWN
    if verified and recorded != actual:
        message = (
            f"SAE {sae.sae_id} was trained on encoder {cfg.model_id!r} (checkpoint "
            f"{recorded[:12]}…), but the encoder given is {encoder.model_id!r} (checkpoint "
            f"{actual[:12]}…): its features would describe other activations"
        )
        if not allow_model_mismatch:
            raise IncompatibleError(message + "; pass --allow-model-mismatch to use it anyway")
        warnings.append(message)
        verified = False
    if layer is not None and cfg.layer is not None and layer != cfg.layer:
        raise IncompatibleError(
            f"SAE {sae.sae_id} was trained on layer {cfg.layer}, not layer {layer}"
        )
    use = layer if layer is not None else cfg.layer
    if use is None:
        raise IncompatibleError(f"SAE {sae.sae_id} records no layer: give the layer explicitly")
    if not 0 <= use <= encoder.num_layers:
        raise IncompatibleError(
            f"layer {use} does not exist: {encoder.model_id} has layers 0..{encoder.num_layers} "
            "(0 = embeddings, i = output of block i)"
        )
    if encoder.hidden_size != cfg.d_in:
        where = f" ({sae.source})" if getattr(sae, "source", None) is not None else ""
        raise IncompatibleError(
            f"SAE {sae.sae_id}{where} expects d_in={cfg.d_in}, but layer {use} of "
            f"{encoder.model_id} has width {encoder.hidden_size}"
        )
    return Compatibility(layer=use, checkpoint_verified=verified, warnings=tuple(warnings))
