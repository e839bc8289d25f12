"""The models of the GPU benchmarks, built from torchvision and transformers with random weights.

There is no model hub on the device machine, so weights are random (seeded): latency does not
depend on them, and the tuning workloads depend only on shapes. Each model exists twice: as a
torch module for the torch peers, and as an ONNX file (exported from that module) for tunefarm.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

BERT_SEQUENCE = 128


@dataclass
class BenchModel:
    name: str
    module: torch.nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    description: str

    def on(self, device: str, *, half: bool) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
        """The module and inputs on ``device``; ``half`` converts weights and float inputs."""
        module = copy.deepcopy(self.module).to(device)
        inputs = tuple(tensor.to(device) for tensor in self.inputs)
        if half:
            module = module.half()
            inputs = tuple(t.half() if t.is_floating_point() else t for t in inputs)
        return module.eval(), inputs


class _BertLastHidden(torch.nn.Module):
    """BERT's encoder output only: one static-shaped tensor out, as serving uses it."""

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def build(name: str, *, seed: int = 0) -> BenchModel:
    torch.manual_seed(seed)
    if name == "resnet50":
        import torchvision

        module = torchvision.models.resnet50(weights=None)
        return BenchModel(
            name, module.eval(), (torch.randn(1, 3, 224, 224),), ["image"], "torchvision resnet50"
        )
    if name == "mobilenet_v2":
        import torchvision

        module = torchvision.models.mobilenet_v2(weights=None)
        return BenchModel(
            name,
            module.eval(),
            (torch.randn(1, 3, 224, 224),),
            ["image"],
            "torchvision mobilenet_v2",
        )
    if name == "bert_base":
        from transformers import BertConfig, BertModel

        config = BertConfig(attn_implementation="eager")  # bert-base-uncased's shape
        bert = BertModel(config, add_pooling_layer=False).eval()
        ids = torch.randint(0, config.vocab_size, (1, BERT_SEQUENCE), dtype=torch.int64)
        mask = torch.ones(1, BERT_SEQUENCE, dtype=torch.int64)
        return BenchModel(
            name,
            _BertLastHidden(bert).eval(),
            (ids, mask),
            ["input_ids", "attention_mask"],
            f"transformers BertModel (bert-base config), sequence {BERT_SEQUENCE}",
        )
    raise ValueError(f"unknown model {name!r}; known: resnet50, mobilenet_v2, bert_base")


MODEL_NAMES = ("resnet50", "mobilenet_v2", "bert_base")


def export_onnx(model: BenchModel, path: Path) -> Path:
    """fp32 ONNX, opset 17, static shapes; tunefarm's --fp16 does the precision change itself."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"input_names": model.input_names, "opset_version": 17}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # The TorchScript exporter: the dynamo one needs onnxscript, which the host lacks.
            torch.onnx.export(model.module, model.inputs, str(path), dynamo=False, **kwargs)
        except TypeError:  # a torch without the ``dynamo`` argument
            torch.onnx.export(model.module, model.inputs, str(path), **kwargs)
    return path
