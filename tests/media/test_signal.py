"""gradcam.media.signal: series in, a plot coloured by the map out; bad files refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradcam.errors import MediaLoadError
from gradcam.media.signal import (
    Signal,
    SignalPreprocess,
    read_signal,
    resample_signal_map,
    write_signal_map,
    write_signal_outputs,
)


def test_npy_shapes(tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", np.arange(5.0))
    assert read_signal(tmp_path / "one.npy").data.shape == (1, 5)
    np.save(tmp_path / "two.npy", np.zeros((3, 7), dtype=np.int32))
    signal = read_signal(tmp_path / "two.npy")
    assert signal.data.shape == (3, 7) and signal.channel_names() == ("ch0", "ch1", "ch2")


def test_csv_columns_are_channels(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text("1,2\n3,4\n5,6\n")
    assert read_signal(tmp_path / "s.csv").data.tolist() == [[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("nan.csv", "1\nnan\n3\n", "1 values are NaN or infinite"),
        ("word.csv", "a\n1\nx\n", "line 3 is not numbers"),
        ("ragged.csv", "1,2\n3\n", "line 2 has 1 values, the first 2"),
        ("header.csv", "a,b,c\n1,2\n3,4\n", "the header names 3 channels"),
        ("short.csv", "1\n", "L >= 2"),
        ("s.wav", "RIFF", "a signal is a .npy or .csv file"),
    ],
)
def test_bad_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(MediaLoadError) as exc:
        read_signal(tmp_path / name)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_too_many_values(tmp_path: Path) -> None:
    np.save(tmp_path / "big.npy", np.zeros((2, 50)))
    with pytest.raises(MediaLoadError, match="100 values exceed the cap of 99"):
        read_signal(tmp_path / "big.npy", max_samples=99)
    (tmp_path / "big.csv").write_text("1,2\n" * 50)
    with pytest.raises(MediaLoadError, match="more than 99 values"):
        read_signal(tmp_path / "big.csv", max_samples=99)


def test_preprocess_is_exact() -> None:
    signal = Signal(torch.tensor([[1.0, 2.0, 3.0, 4.0], [7.0, 7.0, 7.0, 7.0]]))
    x = SignalPreprocess()(signal)
    spread = np.sqrt(1.25)
    assert torch.allclose(x[0, 0], torch.tensor([-1.5, -0.5, 0.5, 1.5]) / spread)
    assert torch.equal(x[0, 1], torch.zeros(4))
    assert SignalPreprocess(length=8, normalize="none")(signal).shape == (1, 2, 8)


def test_map_resampling_is_exact() -> None:
    assert resample_signal_map(torch.tensor([0.0, 1.0]), 4).tolist() == [0.0, 0.25, 0.75, 1.0]
    fine = torch.arange(8.0)
    assert resample_signal_map(fine, 4).tolist() == [0.5, 2.5, 4.5, 6.5]


def test_picture_is_coloured_by_the_map(tmp_path: Path) -> None:
    signal = Signal(torch.zeros(2, 100))
    heat = torch.cat([torch.zeros(50), torch.ones(50)])
    path = write_signal_map(tmp_path / "s.png", signal, heat, row_height=100)
    picture = np.asarray(Image.open(path).convert("RGB"), dtype=int)
    assert picture.shape == (260, 1000, 3)
    # The flat line of the first row (y = 50 of 260): blue where the map is 0, red where it is 1.
    row = picture[10:100]
    left, right = row[:, 150:400], row[:, 500:850]
    blue = (left[..., 2] > 100) & (left[..., 0] < 50)
    red = (right[..., 0] > 100) & (right[..., 2] < 50)
    assert blue.any() and red.any()
    assert not ((left[..., 0] > 100) & (left[..., 2] < 50)).any()


def test_outputs(tmp_path: Path) -> None:
    signal = Signal(torch.randn(1, 40))
    written = write_signal_outputs(tmp_path / "out", signal, torch.rand(10), stem="ecg")
    assert [p.name for p in written] == ["ecg_map.png", "ecg_map.npy"]
    assert np.load(written[1]).shape == (40,)


def test_too_many_channels_to_draw(tmp_path: Path) -> None:
    with pytest.raises(MediaLoadError, match="17 channels: at most 16 are drawn"):
        write_signal_map(tmp_path / "s.png", Signal(torch.zeros(17, 10)), torch.rand(10))
    assert list(tmp_path.iterdir()) == []
