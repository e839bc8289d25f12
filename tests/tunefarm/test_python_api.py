"""``import tunefarm``: compile from Python, call the result like the model, save and load it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

import tunefarm

ROOT = Path(__file__).resolve().parents[2]


def _reference(model_path: Path, image: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {session.get_inputs()[0].name: image})
    return np.asarray(expected)


def test_an_onnx_file_compiles_into_a_callable_that_saves_and_loads(
    tiny_cnn_path: Path, tmp_path: Path
) -> None:
    compiled = tunefarm.compile(
        tiny_cnn_path,
        target="llvm",
        trials=0,
        database=f"sqlite:///{tmp_path / 'tuning.db'}",
        out_dir=tmp_path / "build",
        progress=False,
        baseline=False,
    )
    image = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype("float32")
    expected = _reference(tiny_cnn_path, image)
    np.testing.assert_allclose(compiled(image), expected, rtol=1e-4, atol=1e-4)
    assert compiled.manifest["inputs"][0]["shape"] == [1, 3, 32, 32]
    assert compiled.input_names == ["image"]

    # Torch tensors in, torch tensors out (through DLPack, without a copy on the same device).
    result = compiled(torch.from_numpy(image))
    assert isinstance(result, torch.Tensor)
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-4, atol=1e-4)
    # The next call does not write into the outputs the caller holds.
    other = compiled(torch.zeros(1, 3, 32, 32))
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(other.numpy(), expected)
    # A tensor torch allocated (aligned, so passed as it is), and ones that need a copy first:
    # not contiguous, not aligned (a numpy buffer may not be), tracked by autograd.
    aligned = torch.empty(1, 3, 32, 32)
    aligned.copy_(torch.from_numpy(image))
    np.testing.assert_allclose(compiled(aligned).numpy(), expected, rtol=1e-4, atol=1e-4)
    unaligned = torch.from_numpy(np.concatenate([[0.0], image.ravel()]).astype("float32"))[1:]
    assert unaligned.data_ptr() % 64 != 0
    np.testing.assert_allclose(
        compiled(unaligned.reshape(1, 3, 32, 32)).numpy(), expected, rtol=1e-4, atol=1e-4
    )
    strided = torch.from_numpy(image.transpose(0, 1, 3, 2).copy()).transpose(2, 3)
    assert not strided.is_contiguous()
    np.testing.assert_allclose(
        compiled(strided.requires_grad_()).numpy(), expected, rtol=1e-4, atol=1e-4
    )

    saved = compiled.save(tmp_path / "saved")
    assert sorted(path.name for path in saved.iterdir()) == ["manifest.json", "model.so"]
    again = tunefarm.load(saved)
    np.testing.assert_allclose(again(image), expected, rtol=1e-4, atol=1e-4)
    assert again.manifest == compiled.manifest


def test_a_torch_module_compiles_from_its_example_inputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 8 * 8, 10),
    ).eval()
    example = torch.randn(1, 3, 8, 8)
    compiled = tunefarm.compile(
        module,
        (example,),
        trials=0,
        database=f"sqlite:///{tmp_path / 'tuning.db'}",
        progress=False,
        baseline=False,
    )
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        expected = module(x)
    torch.testing.assert_close(compiled(x), expected, rtol=1e-4, atol=1e-4)


def test_bad_input_is_one_tunefarm_error(tiny_cnn_path: Path, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'tuning.db'}"
    with pytest.raises(tunefarm.TunefarmError, match="no such model file"):
        tunefarm.compile(tmp_path / "missing.onnx", database=database, progress=False)
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("this is not a model")
    with pytest.raises(tunefarm.TunefarmError, match=r"notes\.onnx"):
        tunefarm.compile(not_onnx, database=database, progress=False)
    with pytest.raises(tunefarm.TunefarmError, match="example_inputs"):
        tunefarm.compile(torch.nn.ReLU(), database=database, progress=False)
    with pytest.raises(tunefarm.TunefarmError, match="cannot compile a dict"):
        tunefarm.compile({"not": "a model"}, database=database, progress=False)
    with pytest.raises(tunefarm.TunefarmError, match="database"):
        tunefarm.compile(tiny_cnn_path, database="nosuchdb://x", progress=False)
    with pytest.raises(tunefarm.TunefarmError, match=r"no model\.so"):
        tunefarm.load(tmp_path)


def test_a_call_with_the_wrong_inputs_says_what_the_model_takes(
    tiny_cnn_path: Path, tmp_path: Path
) -> None:
    compiled = tunefarm.compile(
        tiny_cnn_path,
        trials=0,
        database=f"sqlite:///{tmp_path / 'tuning.db'}",
        progress=False,
        baseline=False,
    )
    with pytest.raises(
        tunefarm.TunefarmError,
        match=r"has shape \[1, 3, 16, 16\]; the model takes \[1, 3, 32, 32\]",
    ):
        compiled(np.zeros((1, 3, 16, 16), "float32"))
    with pytest.raises(tunefarm.TunefarmError, match="is float64; the model takes float32"):
        compiled(np.zeros((1, 3, 32, 32)))
    with pytest.raises(tunefarm.TunefarmError, match=r"takes 1 input\(s\) \(image\), not 2"):
        compiled(np.zeros((1, 3, 32, 32), "float32"), np.zeros(1))


class _EncoderBlock(torch.nn.Module):
    """A transformer encoder block whose attention mask comes in as a second input."""

    def __init__(self, width: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.attention = torch.nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm1 = torch.nn.LayerNorm(width)
        self.norm2 = torch.nn.LayerNorm(width)
        self.feed_forward = torch.nn.Sequential(
            torch.nn.Linear(width, 4 * width), torch.nn.GELU(), torch.nn.Linear(4 * width, width)
        )

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        blocked = (1.0 - mask[:, None, None, :].to(tokens.dtype)) * -1e4
        blocked = blocked.expand(-1, self.heads, length, -1).reshape(-1, length, length)
        attended, _ = self.attention(tokens, tokens, tokens, attn_mask=blocked, need_weights=False)
        tokens = self.norm1(tokens + attended)
        return self.norm2(tokens + self.feed_forward(tokens))


def test_a_transformer_block_with_an_attention_mask_matches_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    block = _EncoderBlock().eval()
    tokens = torch.randn(1, 16, 64)
    mask = torch.ones(1, 16, dtype=torch.int64)
    mask[0, 12:] = 0  # padding
    compiled = tunefarm.compile(
        block,
        (tokens, mask),
        trials=0,
        database=f"sqlite:///{tmp_path / 'tuning.db'}",
        progress=False,
        baseline=False,
    )
    # TVM's ConvertLayout cannot take this graph, so "auto" kept the model's layout.
    assert compiled.manifest["pipeline"]["layout"] == "NCHW"
    other = torch.randn(1, 16, 64)
    with torch.no_grad():
        expected = block(other, mask)
    torch.testing.assert_close(compiled(other, mask), expected, rtol=1e-4, atol=1e-4)


def test_a_script_without_a_main_guard_compiles(tiny_cnn_path: Path, tmp_path: Path) -> None:
    # The warm pool spawns its workers; a spawned process imports the parent's script first,
    # which here would call tunefarm.compile again.
    script = tmp_path / "script.py"
    script.write_text(
        "import numpy as np\n"
        "import tunefarm\n"
        f"compiled = tunefarm.compile({str(tiny_cnn_path)!r}, trials=0, progress=False,\n"
        f"    baseline=False, database='sqlite:///{tmp_path / 'tuning.db'}')\n"
        "print('output', compiled(np.zeros((1, 3, 32, 32), 'float32')).shape)\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("output (1, 10)") == 1
