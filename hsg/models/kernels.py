"""oneDNN kernels for the encoder's linear layers on the CPU.

On the CPU almost all of an NT forward pass is its linear layers (≈ 99 % of the FLOPs of
the 50M shape at 21 tokens), and `torch.nn.functional.linear` hands them to MKL's GEMM on
a plain row-major weight. oneDNN's inner-product primitive, given its weight once reordered
into the blocked layout it wants (`torch.ops.mkldnn._reorder_linear_weight`, what torch's
own inductor uses for CPU inference), runs the same product faster, in float32 with the
same reduction order per output up to rounding (hidden states agree with the plain path to
~1e-6 relative; `tests/unit/test_encoder_kernels.py` holds them to 1e-5), and in bfloat16 on
AVX512-BF16/AMX machines.

`use_onednn(model)` swaps every `nn.Linear` of a model for a `OneDNNLinear` in place,
fuses each attention's query/key/value into one product (one 3·d-wide GEMM instead of
three d-wide ones: small GEMMs waste more of the machine; the queries' 1/sqrt(d_head)
folded into it), runs SwiGLU as two products with silu and the multiply fused in, and lets
the residual additions ride on their products (`OneDNNLinear.add_to`): on the CPU the
passes over memory between GEMMs cost ~20 % of a forward pass at NT's widths. Parameter
names and the state dict are unchanged (the fused weights are not registered parameters),
so checkpoints, `forward_from_layer` and steering see the same model. The packed weights
are a second copy of the linear weights (+1× the model's size in memory); they are packed
for one dtype, so the model must not be moved or cast afterwards (`Encoder` packs after
its `.to()`).
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

    def add_to(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``residual + self(x)`` with the addition fused into the product (one pass less
        over the output; the same float operations)."""
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.packed, self.bias, "add")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN"


class FusedLinear:
    """Several linear layers over the same input as one product; outputs split back.

    Not an `nn.Module` on purpose: attached to a module, it adds no parameters to its
    state dict. Holds only the packed weight and the concatenated bias. `scale_first`
    multiplies the first layer's weight and bias (attention's 1/sqrt(d_head) on the
    queries, folded into the product: exact when it is a power of two, as for NT's 64-wide
    heads).
    """

    def __init__(self, linears: list[nn.Linear], scale_first: float = 1.0):
        weights = [lin.weight.detach() for lin in linears]
        biases = [None if lin.bias is None else lin.bias.detach() for lin in linears]
        weights[0] = weights[0] * scale_first
        if biases[0] is not None:
            biases[0] = biases[0] * scale_first
        self.scale_first = scale_first
        self.bias = None if biases[0] is None else torch.cat(biases)
        self.sizes = [lin.out_features for lin in linears]
        self.packed = _pack(torch.cat(weights))

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return out.split(self.sizes, dim=-1)


class FusedSwiGLU:
    """``silu(x W_g) * (x W_v)`` as two products with the activation and the product fused
    in (oneDNN post-ops): no [rows, 2·inter] intermediate, no separate silu and multiply
    passes. `dense` is the bias-free or biased [2·inter, d] projection whose first half
    is the gate, as `Intermediate` reads it."""

    def __init__(self, dense: nn.Linear):
        gate_w, value_w = dense.weight.detach().chunk(2, dim=0)
        self.gate = _pack(gate_w.contiguous())
        self.value = _pack(value_w.contiguous())
        if dense.bias is None:
            self.gate_bias = self.value_bias = None
        else:
            self.gate_bias, self.value_bias = dense.bias.detach().chunk(2)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.ops.mkldnn._linear_pointwise(x, self.gate, self.gate_bias, "swish", [], "")
        return torch.ops.mkldnn._linear_pointwise.binary(
            x, gate, self.value, self.value_bias, "mul"
        )


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
                scale = getattr(module, "query_scale", 1.0)
                module.fused_qkv = FusedLinear(linears, scale_first=scale)
        if getattr(module, "glu", False) and isinstance(getattr(module, "dense", None), nn.Linear):
            module.fused_swiglu = FusedSwiGLU(module.dense)
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, name, OneDNNLinear(child))
                swapped += 1
    return swapped
