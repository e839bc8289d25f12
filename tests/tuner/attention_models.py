"""Self-attention in plain torch, spelled as transformers' BERT spells it, for the tests of
``tuner.fused_attention`` and ``tuner.fused_layer_norm`` (on the CPU) and of their kernels (on a
GPU); and how the CPU tests see such a model: as the vendor-kernels phase gets it, and run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import tvm
from tvm import relax
from tvm.ir import IRModule

from tunefarm.tuner.pipelines import PipelineOptions, default_phases
from tunefarm.tuner.targets import parse_target
from tunefarm.tuner.torch_import import import_exported_program, validate_exported_program


class SelfAttention(torch.nn.Module):
    """Q, K and V projections, the head split, ``softmax(Q Kᵀ · scale + mask) V``, the head
    merge, the output projection and the residual: a BERT layer's attention half."""

    def __init__(
        self,
        heads: int,
        head_size: int,
        *,
        masked: bool = True,
        scale_by_divide: bool = False,
        sdpa: bool = False,
    ) -> None:
        super().__init__()
        self.heads, self.head_size = heads, head_size
        hidden = heads * head_size
        self.query = torch.nn.Linear(hidden, hidden)
        self.key = torch.nn.Linear(hidden, hidden)
        self.value = torch.nn.Linear(hidden, hidden)
        self.out = torch.nn.Linear(hidden, hidden)
        self.masked = masked
        self.scale_by_divide = scale_by_divide
        self.sdpa = sdpa  # transformers' default spelling: torch's scaled_dot_product_attention

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], -1, self.heads, self.head_size).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = self.split(self.query(hidden))
        k = self.split(self.key(hidden))
        v = self.split(self.value(hidden))
        if self.sdpa:
            keep = mask[:, None, None, :].bool() if self.masked else None
            attended = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)
            merged = attended.transpose(1, 2).reshape(hidden.shape[0], -1, hidden.shape[-1])
            return self.out(merged) + hidden
        scores = torch.matmul(q, k.transpose(-1, -2))
        if self.scale_by_divide:
            scores = scores / math.sqrt(self.head_size)
        else:
            scores = scores * (1 / math.sqrt(self.head_size))
        if self.masked:  # 1 keeps a token, 0 drops it: a large negative score
            scores = scores + (1.0 - mask[:, None, None, :]) * torch.finfo(torch.float32).min
        probs = torch.softmax(scores, dim=-1)
        context = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        merged = context.view(hidden.shape[0], -1, self.heads * self.head_size)
        return self.out(merged) + hidden


def example_inputs(
    tokens: int, hidden: int, *, padded: int = 0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states and a mask whose last ``padded`` tokens are padding."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(1, tokens)
    if padded:
        mask[0, -padded:] = 0
    return torch.randn(1, tokens, hidden, generator=generator), mask


class Encoder(torch.nn.Module):
    """BERT encoder layers: attention, residual and layer norm; feed-forward (GELU), residual
    and layer norm."""

    def __init__(self, heads: int, head_size: int, layers: int = 2, *, sdpa: bool = False) -> None:
        super().__init__()
        hidden = heads * head_size
        self.attention = torch.nn.ModuleList(
            SelfAttention(heads, head_size, sdpa=sdpa) for _ in range(layers)
        )
        self.norm1 = torch.nn.ModuleList(torch.nn.LayerNorm(hidden) for _ in range(layers))
        self.up = torch.nn.ModuleList(torch.nn.Linear(hidden, 4 * hidden) for _ in range(layers))
        self.down = torch.nn.ModuleList(torch.nn.Linear(4 * hidden, hidden) for _ in range(layers))
        self.norm2 = torch.nn.ModuleList(torch.nn.LayerNorm(hidden) for _ in range(layers))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for attention, norm1, up, down, norm2 in zip(
            self.attention, self.norm1, self.up, self.down, self.norm2, strict=True
        ):
            hidden = norm1(attention(hidden, mask))
            hidden = norm2(down(torch.nn.functional.gelu(up(hidden))) + hidden)
        return hidden


def before_vendor_phase(
    module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], folder: Path, *, fp16: bool = True
) -> IRModule:
    """``module`` exported, imported and taken through the CUDA pipeline up to the
    vendor-kernels phase (with ``--fp16`` unless ``fp16=False``)."""
    path = folder / "model.pt2"
    torch.export.save(torch.export.export(module, inputs), str(path))
    mod = import_exported_program(validate_exported_program(path))
    target = parse_target("cuda")
    with target, tvm.transform.PassContext(opt_level=3):
        for phase in default_phases(target, PipelineOptions(fp16=fp16, vendor_kernels=True)):
            if phase.name == "vendor-kernels":
                return mod
            mod = tvm.transform.Sequential(phase.passes)(mod)
    raise AssertionError("no vendor-kernels phase")


def relax_ops(mod: IRModule) -> list[str]:
    """The ops ``main`` calls, once per call."""
    ops: list[str] = []

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            ops.append(str(expr.op.name))

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return ops


def run_on_cpu(mod: IRModule, *arrays: np.ndarray) -> np.ndarray:
    """``mod`` built for this CPU and run on ``arrays``."""
    vm = relax.VirtualMachine(tvm.compile(mod, target=parse_target("llvm")), tvm.cpu())
    return vm["main"](*(tvm.runtime.tensor(array) for array in arrays)).numpy()
