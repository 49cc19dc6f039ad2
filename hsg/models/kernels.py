"""oneDNN kernels for the encoder's linear layers on the CPU.

On the CPU almost all of an NT forward pass is its linear layers (≈ 99 % of the FLOPs of
the 50M shape at 21 tokens), and `torch.nn.functional.linear` hands them to MKL's GEMM on
a plain row-major weight. oneDNN's inner-product primitive, given its weight once reordered
into the blocked layout it wants (`torch.ops.mkldnn._reorder_linear_weight`, what torch's
own inductor uses for CPU inference), runs the same product faster, in float32 with the
same reduction order per output up to rounding (hidden states agree with the plain path to
~1e-6 relative; `tests/unit/test_encoder_kernels.py` holds them to 1e-5), and in bfloat16 on
AVX512-BF16/AMX machines.

`use_onednn(model)` swaps every `nn.Linear` of a model for a `OneDNNLinear` in place and
fuses each attention's query/key/value into one product (one 3·d-wide GEMM instead of
three d-wide ones: small GEMMs waste more of the machine). Parameter names and the
state dict are unchanged (the fused weight is not a registered parameter), so checkpoints,
`forward_from_layer` and steering see the same model. The packed weights are a second copy
of the linear weights (+1× the model's size in memory); they are packed for one dtype, so
the model must not be moved or cast afterwards (`Encoder` packs after its `.to()`).
"""

from __future__ import annotations

import torch
from torch import nn

# dtypes oneDNN's CPU inner product runs here (bf16 only where the CPU has the instructions)
_DTYPES = (torch.float32, torch.bfloat16)


def onednn_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `use_onednn` can run a model of `dtype` on `device` on this machine."""
    if device.type != "cpu" or dtype not in _DTYPES or not torch.backends.mkldnn.is_available():
        return False
    try:
        op = torch.ops.mkldnn._linear_pointwise  # noqa: F841 - present in CPU builds with oneDNN
        if dtype == torch.bfloat16:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    return True


def _pack(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)


class OneDNNLinear(nn.Module):
    """`nn.Linear` for inference through oneDNN with a pre-packed weight.

    Keeps `weight`/`bias` under their names (state dict, readers of `.weight` unchanged);
    the packed copy is a plain attribute, not a buffer, so it is never saved.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.packed = _pack(linear.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN"


class FusedLinear:
    """Several linear layers over the same input as one product; outputs split back.

    Not an `nn.Module` on purpose: attached to a module, it adds no parameters to its
    state dict. Holds only the packed weight and the concatenated bias.
    """

    def __init__(self, linears: list[nn.Linear]):
        weight = torch.cat([lin.weight.detach() for lin in linears])
        biases = [lin.bias for lin in linears]
        self.bias = None if biases[0] is None else torch.cat([b.detach() for b in biases])
        self.sizes = [lin.out_features for lin in linears]
        self.packed = _pack(weight)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return out.split(self.sizes, dim=-1)


def use_onednn(model: nn.Module) -> int:
    """Route `model`'s linear layers through oneDNN in place; returns how many were swapped.

    Attention modules with `query`/`key`/`value` also get a `fused_qkv` (see module doc).
    Call after the model has its final device and dtype, and under no autograd: the packed
    weights carry no gradient.
    """
    swapped = 0
    for module in list(model.modules()):
        names = ("query", "key", "value")
        if all(isinstance(getattr(module, n, None), nn.Linear) for n in names):
            linears = [getattr(module, n) for n in names]
            if len({lin.bias is None for lin in linears}) == 1:
                module.fused_qkv = FusedLinear(linears)
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, name, OneDNNLinear(child))
                swapped += 1
    return swapped
