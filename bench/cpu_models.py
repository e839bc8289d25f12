"""The models of the CPU benchmark (issue 15), written in plain torch, with random weights.

torchvision does not import beside this machine's torch 2.13 (CPU build), so the architectures
are written out here after torchvision's definitions, at their real shapes: ResNet-50,
MobileNetV2, SqueezeNet 1.0, ShuffleNet V2 x1.0 and DenseNet-121 on one 3x224x224 image, and
BERT-base's encoder (12 layers, hidden 768, 12 heads, FFN 3072) on 128 tokens. BERT takes the
embedded hidden states ([1, 128, 768] float) as its input, so the ONNX holds no embedding
lookup and no attention mask: the encoder layers are all of its work.

Weights are random (seeded) and the modules are in eval mode: latency does not depend on the
weights, and the tuning workloads depend only on the shapes. ``onnx_path`` exports a model to
ONNX (opset 17) once into a cache folder and returns the file.

    .venv/bin/python bench/cpu_models.py [--models squeezenet,bert_base] [--check-import]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_models import BenchModel, export_onnx

DEFAULT_CACHE = Path(__file__).resolve().parent / ".models"
IMAGE = (1, 3, 224, 224)
BERT_SEQUENCE = 128
BERT_HIDDEN = 768


# --------------------------------------------------------------------------------------------
# CNNs (torchvision's definitions)
# --------------------------------------------------------------------------------------------


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias) + BatchNorm, padded to keep the size at stride 1."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            conv_bn(cin, width, 1),
            nn.ReLU(inplace=True),
            conv_bn(width, width, 3, stride),  # torchvision's v1.5: the stride on the 3x3
            nn.ReLU(inplace=True),
            conv_bn(width, cout, 1),
        )
        self.shortcut = (
            conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet50(nn.Module):
    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            conv_bn(3, 64, 7, 2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        ]
        cin = 64
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for index in range(blocks):
                layers.append(Bottleneck(cin, width, stride if index == 0 else 1))
                cin = width * Bottleneck.expansion
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


class InvertedResidualV2(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [conv_bn(cin, hidden, 1), nn.ReLU6(inplace=True)]
        layers += [
            conv_bn(hidden, hidden, 3, stride, groups=hidden),
            nn.ReLU6(inplace=True),
            conv_bn(hidden, cout, 1),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))
    SETTINGS += ((6, 160, 3, 2), (6, 320, 1, 1))
    """(expansion, output channels, blocks, stride of the first block)"""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, 32, 3, 2), nn.ReLU6(inplace=True)]
        cin = 32
        for expand, cout, blocks, stride in self.SETTINGS:
            for index in range(blocks):
                layers.append(InvertedResidualV2(cin, cout, stride if index == 0 else 1, expand))
                cin = cout
        layers += [conv_bn(cin, 1280, 1), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(pooled, 1))


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU(inplace=True))
        self.expand1x1 = nn.Sequential(nn.Conv2d(squeeze, expand1x1, 1), nn.ReLU(inplace=True))
        self.expand3x3 = nn.Sequential(
            nn.Conv2d(squeeze, expand3x3, 3, padding=1), nn.ReLU(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze(x)
        return torch.cat([self.expand1x1(x), self.expand3x3(x)], 1)


class SqueezeNet10(nn.Module):
    def __init__(self, classes: int = 1000) -> None:
        super().__init__()

        def pool() -> nn.Module:
            return nn.MaxPool2d(3, 2, ceil_mode=True)

        self.features = nn.Sequential(
            nn.Conv2d(3, 96, 7, 2),
            nn.ReLU(inplace=True),
            pool(),
            Fire(96, 16, 64, 64),
            Fire(128, 16, 64, 64),
            Fire(128, 32, 128, 128),
            pool(),
            Fire(256, 32, 128, 128),
            Fire(256, 48, 192, 192),
            Fire(384, 48, 192, 192),
            Fire(384, 64, 256, 256),
            pool(),
            Fire(512, 64, 256, 256),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(0.5),
            nn.Conv2d(512, classes, 1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


class ShuffleUnit(nn.Module):
    """ShuffleNet V2's unit: stride 1 splits the channels in half, stride 2 uses both branches
    on all of them; then the two halves' channels are interleaved.

    The unit knows its output's shape (``size`` is its height and width): the channel split and
    shuffle then export as Slice and Reshape with constant shapes, where reading ``x.shape``
    would leave a Shape/Gather/Div chain for every unit in the ONNX.
    """

    def __init__(self, cin: int, cout: int, stride: int, size: int) -> None:
        super().__init__()
        self.stride = stride
        self.shape = (1, cout, size, size)
        self.branch = branch = cout // 2
        if stride > 1:
            self.branch1: nn.Module = nn.Sequential(
                conv_bn(cin, cin, 3, stride, groups=cin),
                conv_bn(cin, branch, 1),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Identity()
        first = cin if stride > 1 else branch
        self.branch2 = nn.Sequential(
            conv_bn(first, branch, 1),
            nn.ReLU(inplace=True),
            conv_bn(branch, branch, 3, stride, groups=branch),
            conv_bn(branch, branch, 1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            kept, worked = x[:, : self.branch], x[:, self.branch :]
            out = torch.cat((kept, self.branch2(worked)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        batch, channels, height, width = self.shape
        out = out.reshape(batch, 2, channels // 2, height, width).transpose(1, 2)
        return out.reshape(self.shape)


class ShuffleNetV2x10(nn.Module):
    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, 24, 3, 2), nn.ReLU(inplace=True)]
        layers.append(nn.MaxPool2d(3, 2, 1))
        cin, size = 24, IMAGE[-1] // 4
        for repeats, cout in ((4, 116), (8, 232), (4, 464)):
            size //= 2
            for index in range(repeats):
                layers.append(ShuffleUnit(cin, cout, 2 if index == 0 else 1, size))
                cin = cout
        layers += [conv_bn(cin, 1024, 1), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(1024, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean([2, 3]))


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bottleneck: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, bottleneck * growth, 1, bias=False),
            nn.BatchNorm2d(bottleneck * growth),
            nn.ReLU(inplace=True),
            nn.Conv2d(bottleneck * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Not in place: the block's concatenation still holds x.
        return torch.cat([x, self.body(x)], 1)


class DenseNet121(nn.Module):
    def __init__(self, classes: int = 1000, growth: int = 32, bottleneck: int = 4) -> None:
        super().__init__()
        channels = 64
        layers: list[nn.Module] = [
            nn.Conv2d(3, channels, 7, 2, 3, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        ]
        blocks = (6, 12, 24, 16)
        for index, count in enumerate(blocks):
            for _ in range(count):
                layers.append(DenseLayer(channels, growth, bottleneck))
                channels += growth
            if index != len(blocks) - 1:
                layers += [
                    nn.BatchNorm2d(channels),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(channels, channels // 2, 1, bias=False),
                    nn.AvgPool2d(2, 2),
                ]
                channels //= 2
        layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(pooled, 1))


# --------------------------------------------------------------------------------------------
# BERT-base encoder
# --------------------------------------------------------------------------------------------


class EncoderLayer(nn.Module):
    """One post-LayerNorm BERT layer in plain ops: the ONNX it exports is MatMul/Add, Reshape,
    Transpose, Softmax, LayerNormalization and an erf GELU (opset 17 has no Gelu op)."""

    def __init__(self, hidden: int = BERT_HIDDEN, heads: int = 12, ffn: int = 3072) -> None:
        super().__init__()
        self.heads = heads
        self.head_size = hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attention_out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.intermediate = nn.Linear(hidden, ffn)
        self.output = nn.Linear(ffn, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=1e-12)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, sequence, _ = x.shape
        return x.reshape(batch, sequence, self.heads, self.head_size).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, sequence, hidden = x.shape
        query = self.split_heads(self.query(x))
        key = self.split_heads(self.key(x))
        value = self.split_heads(self.value(x))
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.head_size)
        if mask is not None:
            scores = scores + mask  # additive: 0 where attended, -10000 where padded
        context = torch.matmul(torch.softmax(scores, dim=-1), value)
        context = context.transpose(1, 2).reshape(batch, sequence, hidden)
        x = self.attention_norm(x + self.attention_out(context))
        ffn = self.output(nn.functional.gelu(self.intermediate(x)))
        return self.output_norm(x + ffn)


class BertEncoder(nn.Module):
    def __init__(self, layers: int = 12) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(EncoderLayer() for _ in range(layers)))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.layers(hidden_states)


class MaskedBertEncoder(BertEncoder):
    """The encoder with BERT's attention mask as a second input (1 for a token, 0 for padding),
    turned into the additive mask every layer adds to its attention scores."""

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        additive = (1.0 - attention_mask[:, None, None, :].to(hidden_states.dtype)) * -10000.0
        for layer in self.layers:
            hidden_states = layer(hidden_states, additive)
        return hidden_states


# --------------------------------------------------------------------------------------------
# The catalogue and the ONNX cache
# --------------------------------------------------------------------------------------------

MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], str, str]] = {
    "resnet50": (ResNet50, IMAGE, "image", "ResNet-50 (torchvision's v1.5), 1x3x224x224"),
    "mobilenet_v2": (MobileNetV2, IMAGE, "image", "MobileNetV2 1.0, 1x3x224x224"),
    "squeezenet": (SqueezeNet10, IMAGE, "image", "SqueezeNet 1.0, 1x3x224x224"),
    "shufflenet_v2": (ShuffleNetV2x10, IMAGE, "image", "ShuffleNet V2 x1.0, 1x3x224x224"),
    "densenet121": (DenseNet121, IMAGE, "image", "DenseNet-121, 1x3x224x224"),
    "bert_base": (
        BertEncoder,
        (1, BERT_SEQUENCE, BERT_HIDDEN),
        "hidden_states",
        f"BERT-base encoder: 12 layers, hidden 768, 12 heads, FFN 3072, sequence "
        f"{BERT_SEQUENCE}; input the embedded hidden states, no mask",
    ),
}
MODEL_NAMES = tuple(MODELS)


def build(name: str, *, seed: int = 0) -> BenchModel:
    """The model in eval mode with seeded random weights, and a seeded random input."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    factory, shape, input_name, description = MODELS[name]
    torch.manual_seed(seed)
    module = factory().eval()
    return BenchModel(name, module, (torch.randn(*shape),), [input_name], description)


def onnx_path(name: str, *, cache: Path = DEFAULT_CACHE, seed: int = 0) -> Path:
    """The model's ONNX file (opset 17, static shapes) in ``cache``; exported only if missing."""
    path = cache / f"{name}-seed{seed}.onnx"
    if not path.is_file():
        # Written beside and renamed, so an interrupted export leaves no half file behind.
        partial = path.with_suffix(".onnx.tmp")
        export_onnx(build(name, seed=seed), partial)
        partial.replace(path)
    return path


def check_import(path: Path) -> str | None:
    """None when TVM's ONNX frontend imports the file, else the error's first line."""
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    try:
        from_onnx(onnx.load(str(path)))
    except Exception as error:
        return f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODEL_NAMES))
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--check-import", action="store_true", help="import each into TVM too")
    args = parser.parse_args(argv)
    failed = 0
    for name in args.models.split(","):
        path = onnx_path(name, cache=args.cache)
        line = f"{name}: {path} ({path.stat().st_size / 1e6:.1f} MB)"
        if args.check_import:
            error = check_import(path)
            failed += error is not None
            line += f", TVM import: {error or 'ok'}"
        print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
