"""1-D signals (ECG, audio, sensor series): reading ``.npy`` / ``.csv``, a plot coloured by the map.

:func:`read_signal` returns a :class:`Signal` of ``(C, L)`` float32 values (channels first, as
``nn.Conv1d`` takes them), refusing NaN or infinite values, text that is not numbers and more
than :data:`MAX_SAMPLES` values. :class:`SignalPreprocess` makes the ``(1, C, L)`` input
(z-scored per channel, resampled to the model's length); :func:`write_signal_map` draws each
channel as a line coloured by the map at that time.

Examples:
    >>> signal = Signal(torch.tensor([[0.0, 1.0, 2.0, 3.0]]))
    >>> SignalPreprocess(length=8)(signal).shape
    torch.Size([1, 1, 8])
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gradcam.errors import MediaLoadError
from gradcam.outputs import output_folder, write_atomic

__all__ = [
    "MAX_DRAWN_CHANNELS",
    "MAX_SAMPLES",
    "SIGNAL_SUFFIXES",
    "Signal",
    "SignalPreprocess",
    "read_signal",
    "resample_signal_map",
    "write_signal_map",
    "write_signal_outputs",
]

#: Most values (channels times samples) read from one file; more is refused.
MAX_SAMPLES = 10_000_000
#: Most channels drawn by :func:`write_signal_map` (one row each); more are refused there.
MAX_DRAWN_CHANNELS = 16
#: The suffixes read as signals.
SIGNAL_SUFFIXES = (".npy", ".csv")

PathLike = str | os.PathLike[str]


# eq=False: tensors have no single truth value, so field-by-field equality cannot be defined.
@dataclass(frozen=True, eq=False)
class Signal:
    """A multichannel series.

    Attributes:
        data: ``(C, L)`` float32 values, channels first.
        names: one name a channel (a ``.csv`` file's header, else ``ch0``, ``ch1``, ...).
    """

    data: Tensor
    names: tuple[str, ...] = ()

    def channel_names(self) -> tuple[str, ...]:
        """``names``, or ``ch0``, ``ch1``, ... when the file gave none."""
        return self.names or tuple(f"ch{i}" for i in range(self.data.shape[0]))


def _check(values: np.ndarray, name: str, max_samples: int) -> np.ndarray:
    if values.size > max_samples:
        raise MediaLoadError(
            f"{name}: {values.size} values exceed the cap of {max_samples} (max_samples)"
        )
    if values.ndim == 1:
        values = values[None]
    if values.ndim != 2 or values.shape[1] < 2:
        raise MediaLoadError(
            f"{name}: a signal is (L,) or (channels, L) with L >= 2, the file holds "
            f"shape {values.shape}"
        )
    bad = int(values.size - np.isfinite(values).sum())
    if bad:
        raise MediaLoadError(f"{name}: {bad} values are NaN or infinite: fill them first")
    return values


def read_signal(path: PathLike, *, max_samples: int = MAX_SAMPLES) -> Signal:
    """Read a signal from ``.npy`` (``(L,)`` or ``(C, L)``) or ``.csv`` (a column a channel).

    A ``.csv`` file may start with one row of channel names; every other cell must be a number.

    Raises:
        MediaLoadError: a missing file, unknown suffix, not numbers, a wrong shape, a NaN or
            infinite value, or more than ``max_samples`` values.

    Examples:
        >>> _ = Path("ecg.csv").write_text("lead1,lead2\\n0.1,0.2\\n0.3,0.4\\n0.5,0.6\\n")
        >>> signal = read_signal("ecg.csv")
        >>> signal.data.tolist(), signal.names
        ([[0.10000000149011612, 0.30000001192092896, 0.5], \
[0.20000000298023224, 0.4000000059604645, 0.6000000238418579]], ('lead1', 'lead2'))
    """
    file = Path(path)
    name = file.name
    if not file.is_file():
        raise MediaLoadError(f"{name}: no such file")
    suffix = file.suffix.lower()
    names: tuple[str, ...] = ()
    if suffix == ".npy":
        try:
            array = np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise MediaLoadError(f"{name}: not a readable .npy array ({exc})") from None
        if array.dtype.kind not in "biuf":
            raise MediaLoadError(f"{name}: holds {array.dtype} values, not numbers")
        if array.size > max_samples:
            _check(array, name, max_samples)
        # a copy: a float32 file would otherwise stay a read-only memory map under the tensor
        values = _check(np.array(array, dtype=np.float32), name, max_samples)
    elif suffix == ".csv":
        values, names = _read_csv(file, max_samples)
        values = _check(values, name, max_samples)
    else:
        raise MediaLoadError(f"{name}: a signal is a {' or '.join(SIGNAL_SUFFIXES)} file")
    return Signal(torch.from_numpy(np.ascontiguousarray(values)), names)


def _read_csv(file: Path, max_samples: int) -> tuple[np.ndarray, tuple[str, ...]]:
    rows: list[list[float]] = []
    names: tuple[str, ...] = ()
    count = 0
    try:
        with file.open(newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.reader(handle), start=1):
                if not row:
                    continue
                try:
                    numbers = [float(cell) for cell in row]
                except ValueError:
                    if number == 1:
                        names = tuple(cell.strip() for cell in row)
                        continue
                    raise MediaLoadError(f"{file.name}: line {number} is not numbers") from None
                if rows and len(numbers) != len(rows[0]):
                    raise MediaLoadError(
                        f"{file.name}: line {number} has {len(numbers)} values, the first "
                        f"{len(rows[0])}"
                    )
                count += len(numbers)
                if count > max_samples:
                    raise MediaLoadError(
                        f"{file.name}: more than {max_samples} values (the cap, max_samples)"
                    )
                rows.append(numbers)
    except UnicodeDecodeError:
        raise MediaLoadError(f"{file.name}: not a UTF-8 text file") from None
    if not rows:
        raise MediaLoadError(f"{file.name}: no numbers")
    if names and len(names) != len(rows[0]):
        raise MediaLoadError(
            f"{file.name}: the header names {len(names)} channels, the rows hold {len(rows[0])}"
        )
    return np.asarray(rows, dtype=np.float32).T, names


@dataclass(frozen=True)
class SignalPreprocess:
    """Turn a :class:`Signal` into a ``(1, C, L)`` model input: the documented default.

    Each channel is z-scored, ``(v - mean) / std`` over its samples (a constant channel becomes
    zeros); ``normalize="none"`` keeps the values. With ``length``, the series is then
    resampled linearly to the model's length (``align_corners=False``, the convention
    :func:`resample_signal_map` inverts).

    Examples:
        >>> SignalPreprocess()(Signal(torch.tensor([[1.0, 3.0], [5.0, 5.0]]))).tolist()
        [[[-1.0, 1.0], [0.0, 0.0]]]
    """

    length: int | None = None
    normalize: str = "zscore"

    def __post_init__(self) -> None:
        if self.normalize not in ("zscore", "none"):
            raise ValueError(f"normalize must be 'zscore' or 'none', got {self.normalize!r}")

    def __call__(self, signal: Signal) -> Tensor:
        """The float32 ``(1, C, L)`` input of ``signal``."""
        values = signal.data.double()
        if self.normalize == "zscore":
            mean = values.mean(dim=1, keepdim=True)
            spread = values.std(dim=1, keepdim=True, unbiased=False)
            values = torch.where(
                spread > 0, (values - mean) / spread.clamp_min(1e-300), torch.zeros_like(values)
            )
        values = values.float()[None]
        if self.length is not None and values.shape[-1] != self.length:
            values = F.interpolate(values, size=self.length, mode="linear", align_corners=False)
        return values.contiguous()


def resample_signal_map(map1d: Tensor, length: int) -> Tensor:
    """A ``(l,)`` map on the model's grid, resampled linearly to the signal's ``length``.

    Examples:
        >>> resample_signal_map(torch.tensor([0.0, 1.0]), 4).tolist()
        [0.0, 0.25, 0.75, 1.0]
    """
    if map1d.dim() != 1:
        raise ValueError(f"a signal map is (l,), got shape {tuple(map1d.shape)}")
    values = torch.nan_to_num(map1d.detach().float().cpu())
    if values.shape[0] == length:
        return values.clone()
    return F.interpolate(values[None, None], size=length, mode="linear", align_corners=False)[0, 0]


def write_signal_map(
    path: PathLike,
    signal: Signal,
    map1d: Tensor,
    *,
    colormap: str = "jet",
    width: int = 1000,
    row_height: int = 120,
) -> Path:
    """Write a PNG of each channel drawn as a line coloured by the map (in [0, 1]) at that time.

    One row a channel, ``width`` x ``row_height * C + 60`` pixels (the bottom 60 hold the time
    axis and the colour bar's scale). At most :data:`MAX_DRAWN_CHANNELS` channels.

    Examples:
        >>> from PIL import Image
        >>> signal = Signal(torch.sin(torch.linspace(0, 6, 200)).view(1, -1))
        >>> Image.open(write_signal_map("ecg.png", signal, torch.rand(50))).size
        (1000, 180)
    """
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    channels, length = signal.data.shape
    if channels > MAX_DRAWN_CHANNELS:
        raise MediaLoadError(
            f"{channels} channels: at most {MAX_DRAWN_CHANNELS} are drawn; choose the channels "
            "to show"
        )
    heat = resample_signal_map(map1d, length).clamp(0.0, 1.0).numpy()
    dpi = 100
    height = row_height * channels + 60
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    bottom = 60 / height
    names = signal.channel_names()
    time = np.arange(length)
    scale = Normalize(0.0, 1.0)
    lines = None
    for c in range(channels):
        top = 1.0 - c * row_height / height
        axes = figure.add_axes(
            (0.08, top - (row_height - 8) / height, 0.8, (row_height - 16) / height)
        )
        values = signal.data[c].numpy()
        points = np.stack([time, values], axis=1)
        segments = np.stack([points[:-1], points[1:]], axis=1)
        lines = LineCollection(list(segments), cmap=colormap, norm=scale, linewidths=1.5)
        lines.set_array((heat[:-1] + heat[1:]) / 2)
        axes.add_collection(lines)
        axes.set_xlim(0, length - 1)
        low, high = float(values.min()), float(values.max())
        margin = (high - low) * 0.05 or 1.0
        axes.set_ylim(low - margin, high + margin)
        axes.set_ylabel(names[c] if c < len(names) else f"ch{c}")
        if c < channels - 1:
            axes.set_xticklabels([])
        else:
            axes.set_xlabel("sample")
    assert lines is not None  # a signal has at least one channel
    colorbar_axes = figure.add_axes((0.90, bottom, 0.02, 1.0 - bottom - 0.02))
    figure.colorbar(lines, cax=colorbar_axes, label="map")

    def save(tmp: Path) -> None:
        figure.savefig(tmp, format="png", dpi=dpi)

    return write_atomic(path, save)


def write_signal_outputs(
    folder: PathLike, signal: Signal, map1d: Tensor, *, stem: str = "signal"
) -> list[Path]:
    """Write a signal's explanation into ``folder``: ``{stem}_map.png`` and ``{stem}_map.npy``
    (the map resampled to the signal's length). The folder is checked before any work.

    Examples:
        >>> signal = Signal(torch.rand(2, 30))
        >>> [p.name for p in write_signal_outputs("out", signal, torch.rand(10))]
        ['signal_map.png', 'signal_map.npy']
    """
    where = output_folder(folder)
    values = resample_signal_map(map1d, signal.data.shape[1]).numpy()

    def save(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.save(handle, values)

    return [
        write_signal_map(where / f"{stem}_map.png", signal, map1d),
        write_atomic(where / f"{stem}_map.npy", save),
    ]
