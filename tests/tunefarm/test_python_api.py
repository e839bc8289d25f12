"""``import tunefarm``: compile from Python, call the result like the model, save and load it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

import tunefarm


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

    # Torch tensors in, torch tensors out.
    result = compiled(torch.from_numpy(image))
    assert isinstance(result, torch.Tensor)
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-4, atol=1e-4)

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
