"""Downstream "loss recovered": the SAE's reconstruction spliced back into the encoder.

Reconstruction error in activation space says little about whether the model still works
on the reconstruction; the standard check (SAELens's "CE loss recovered") runs the rest of
the model on it. Here, for each batch of sequences:

1. a seeded `MASK_RATE` of the content tokens (at least one per sequence) is replaced by
   `<mask>`, and hidden state `layer` is computed from the masked input;
2. the content rows of that hidden state are replaced three ways — kept (clean), by the
   SAE's reconstruction `decode(encode(h))`, by zeros (ablation); `<cls>` and padding are
   left as they are, since hsg's SAEs never read them;
3. blocks `layer+1 … L` run on each, then the final LayerNorm.

With the masked-LM head in the checkpoint (NT checkpoints are `EsmForMaskedLM` state
dicts: `lm_head.dense`, GELU, `lm_head.layer_norm`, `lm_head.decoder` + `lm_head.bias`),
the loss is the cross-entropy of the original tokens at the masked positions, and

    loss_recovered = (L_zero - L_sae) / (L_zero - L_clean),

1 when splicing in the reconstruction costs nothing, 0 when it is as bad as deleting the
layer. Without the head (or always, as `hidden_recovered`) the loss is the squared distance
of the final hidden states to the clean run's, as a fraction of their variance
(L_clean = 0 then). Both need the encoder and the regions, not cached activations.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

MASK_RATE = 0.15  # BERT/ESM's masking rate; NT was trained with it


def read_lm_head(encoder) -> dict[str, torch.Tensor] | None:
    """The MLM head's tensors from the encoder's checkpoint files, or None without one."""
    names = ("dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias")
    found: dict[str, torch.Tensor] = {}
    for path in getattr(encoder, "weight_paths", []):
        if path.name.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as fh:
                for key in fh.keys():  # noqa: SIM118 - safe_open has no __iter__
                    if key.startswith("lm_head.") or key == "esm.embeddings.word_embeddings.weight":
                        found[key] = fh.get_tensor(key)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            found.update(
                {k: v for k, v in state.items() if k.startswith("lm_head.") or "word_emb" in k}
            )
    head = {n: found.get(f"lm_head.{n}") for n in names}
    if any(v is None for v in head.values()):
        return None
    decoder = found.get("lm_head.decoder.weight")
    if decoder is None:  # tied to the input embeddings
        decoder = found.get("esm.embeddings.word_embeddings.weight")
    bias = found.get("lm_head.bias", found.get("lm_head.decoder.bias"))
    if decoder is None or bias is None:
        return None
    return {**head, "decoder.weight": decoder, "bias": bias}  # type: ignore[dict-item]


def mlm_logits(head: dict[str, torch.Tensor], h: torch.Tensor, eps: float) -> torch.Tensor:
    """ESM's LM head: dense, exact (erf) GELU, LayerNorm, decoder + bias."""
    x = F.linear(h, head["dense.weight"], head["dense.bias"])
    x = x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    x = F.layer_norm(x, (x.shape[-1],), head["layer_norm.weight"], head["layer_norm.bias"], eps)
    return F.linear(x, head["decoder.weight"]) + head["bias"]


def _mask_positions(content: torch.Tensor, rate: float, gen: torch.Generator) -> torch.Tensor:
    """A seeded choice of content positions, at least one per row with content."""
    draw = torch.rand(content.shape, generator=gen) < rate
    chosen = draw & content
    for row in range(content.shape[0]):
        if content[row].any() and not chosen[row].any():
            cols = content[row].nonzero().squeeze(-1)
            pick = cols[torch.randint(len(cols), (1,), generator=gen)]
            chosen[row, pick] = True
    return chosen


@torch.no_grad()
def loss_recovered(
    encoder,
    sae,
    layer: int,
    sequences: Iterable[str],
    *,
    batch_size: int = 16,
    mask_rate: float = MASK_RATE,
    seed: int = 0,
    head: dict[str, torch.Tensor] | None | bool = True,
) -> dict[str, Any]:
    """The downstream losses and loss recovered of ``sae`` at ``layer`` (module docstring).

    ``head``: True reads the MLM head from the checkpoint (None when it has none), False
    skips it, or the head's tensors. Long sequences are cut into the encoder's windows.
    """
    if head is True:
        head = read_lm_head(encoder)
    elif head is False:
        head = None
    model = encoder.model
    device, dtype = encoder.device, encoder.dtype
    if head is not None:
        head = {k: v.to(device=device, dtype=dtype) for k, v in head.items()}
    eps = model.config.layer_norm_eps
    mask_id = model.config.mask_token_id
    gen = torch.Generator().manual_seed(seed)
    ce = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    dist = {"sae": 0.0, "zero": 0.0}
    sum_f = None
    sum_f2 = 0.0
    n_masked = n_tokens = n_seq = 0
    batch: list[str] = []

    def flush(seqs: Sequence[str]) -> None:
        nonlocal sum_f, sum_f2, n_masked, n_tokens, n_seq
        rows = [w for s in seqs for w in encoder.tokenizer.encode_windows(s, "s")]
        ids, attn = encoder.tokenizer.pad(rows)
        ids_t = torch.tensor(ids, dtype=torch.long)
        attn_t = torch.tensor(attn, dtype=torch.bool)
        content = attn_t.clone()
        content[:, 0] = False
        masked = _mask_positions(content, mask_rate, gen)
        inp = ids_t.masked_fill(masked, mask_id).to(device)
        m = attn_t.to(device)
        c = content.to(device)
        h = model(inp, m, layer=layer)
        x = h[c]
        x_hat = sae.decode(sae.encode(x.float())).to(device=device, dtype=dtype)
        finals = {}
        for name in ("clean", "sae", "zero"):
            hv = h.clone()
            if name == "sae":
                hv[c] = x_hat
            elif name == "zero":
                hv[c] = 0
            f = model.run_blocks(hv, m, layer, model.num_layers)
            finals[name] = model.encoder.emb_layer_norm_after(f)
        target = ids_t[masked].to(device)
        mk = masked.to(device)
        if head is not None:
            for name, f in finals.items():
                logits = mlm_logits(head, f[mk], eps).float()
                ce[name] += float(F.cross_entropy(logits, target, reduction="sum"))
        clean = finals["clean"][c].double()
        for name in ("sae", "zero"):
            dist[name] += float((finals[name][c].double() - clean).pow(2).sum())
        sum_f = clean.sum(0) if sum_f is None else sum_f + clean.sum(0)
        sum_f2 += float(clean.pow(2).sum())
        n_masked += int(masked.sum())
        n_tokens += int(content.sum())
        n_seq += len(seqs)

    for seq in sequences:
        batch.append(seq)
        if len(batch) == batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    if n_tokens == 0:
        return {"downstream_sequences": 0}
    assert sum_f is not None
    variance = sum_f2 - float(sum_f.pow(2).sum()) / n_tokens
    rel = {k: v / variance if variance > 0 else math.nan for k, v in dist.items()}
    out: dict[str, Any] = {
        "downstream_sequences": n_seq,
        "downstream_tokens": n_tokens,
        "hidden_rel_error_sae": rel["sae"],
        "hidden_rel_error_zero": rel["zero"],
        "hidden_recovered": _recovered(rel["zero"], rel["sae"], 0.0),
        "mlm_head": head is not None,
    }
    if head is not None:
        loss = {k: v / n_masked for k, v in ce.items()}
        out.update(
            {
                "masked_tokens": n_masked,
                "mlm_loss_clean": loss["clean"],
                "mlm_loss_sae": loss["sae"],
                "mlm_loss_zero": loss["zero"],
                "loss_recovered": _recovered(loss["zero"], loss["sae"], loss["clean"]),
                "loss_recovered_by": "masked-LM cross-entropy",
            }
        )
    else:
        out["loss_recovered"] = out["hidden_recovered"]
        out["loss_recovered_by"] = "final hidden states (no MLM head in the checkpoint)"
    return out


def _recovered(zero: float, sae: float, clean: float) -> float:
    gap = zero - clean
    return (zero - sae) / gap if gap != 0 else math.nan
