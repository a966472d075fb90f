"""3-D volumes: NIfTI and NumPy files in, maps that open aligned in 3D Slicer or ITK-SNAP out.

:func:`read_volume` reads ``.nii`` / ``.nii.gz`` (through nibabel, keeping the affine and the
header) and ``.npy`` into a :class:`Volume` of float32 voxels in the file's own voxel order,
refusing NaN or infinite voxels, unreadable or inconsistent headers, a singular affine, more than
:data:`MAX_VOXELS` voxels, and a 4-D file unless one volume of it is chosen.
:class:`VolumePreprocess` makes the ``(1, 1, D, H, W)`` input (z-scored intensities, resized to
the model's grid); :func:`resample_map` takes a map on that grid back to the volume's, and
:func:`write_volume_outputs` writes it as NIfTI with the input's affine, plus the three slices
through its peak as a PNG.

Examples:
    >>> volume = Volume(torch.arange(24.0).view(2, 3, 4), np.eye(4))
    >>> VolumePreprocess(size=(4, 4, 4))(volume).shape
    torch.Size([1, 1, 4, 4, 4])
"""

from __future__ import annotations

import gzip
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from gradcam.errors import MediaLoadError
from gradcam.outputs import output_folder, write_atomic
from gradcam.viz import overlay

__all__ = [
    "MAX_VOXELS",
    "VOLUME_SUFFIXES",
    "Volume",
    "VolumePreprocess",
    "peak_voxel",
    "read_volume",
    "resample_map",
    "write_peak_slices",
    "write_volume_map",
    "write_volume_outputs",
]

#: Most voxels of the one 3-D volume read (512 ** 3, 512 MiB as float32); larger is refused.
MAX_VOXELS = 512**3
#: The suffixes read as volumes.
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".npy")

PathLike = str | os.PathLike[str]


# eq=False: tensors have no single truth value, so field-by-field equality cannot be defined.
@dataclass(frozen=True, eq=False)
class Volume:
    """One 3-D volume and where it sits in the world.

    Attributes:
        data: ``(X, Y, Z)`` float32 voxels, in the file's voxel order (nothing is reoriented,
            so a map on this grid lines up with the file).
        affine: ``(4, 4)`` voxel-to-world matrix (the identity for ``.npy``).
        header: the NIfTI header of the file (a copy), or ``None`` for ``.npy``.
    """

    data: Tensor
    affine: np.ndarray
    header: Any = None


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _choose(shape: tuple[int, ...], index: int | None, name: str) -> tuple[int, ...]:
    """The index that selects one 3-D volume of an array of ``shape``."""
    while len(shape) > 4 and shape[-1] == 1:
        shape = shape[:-1]  # NIfTI pads unused dimensions with 1
    if len(shape) > 4:
        raise MediaLoadError(f"{name}: a volume must be 3-D, the file holds shape {shape}")
    if len(shape) == 4 and shape[3] == 1 and index is None:
        return (slice(None),) * 3 + (0,)  # type: ignore[return-value]
    if len(shape) == 4:
        if index is None:
            raise MediaLoadError(
                f"{name}: a 4-D file of {shape[3]} volumes {shape[:3]}: choose one with a "
                f"volume index (0 to {shape[3] - 1})"
            )
        if not -shape[3] <= index < shape[3]:
            raise MediaLoadError(
                f"{name}: volume index {index} is out of range: the file has {shape[3]} volumes"
            )
        return (slice(None),) * 3 + (index,)  # type: ignore[return-value]
    if len(shape) != 3:
        raise MediaLoadError(f"{name}: a volume must be 3-D, the file holds shape {shape}")
    if index is not None:
        raise MediaLoadError(f"{name}: a volume index was given, but the file holds one volume")
    return (slice(None),) * 3  # type: ignore[return-value]


def read_volume(
    path: PathLike, *, index: int | None = None, max_voxels: int = MAX_VOXELS
) -> Volume:
    """Read one 3-D volume from a ``.nii``, ``.nii.gz`` or ``.npy`` file.

    Args:
        path: the file.
        index: which volume of a 4-D file (time or channels last, as NIfTI stores them);
            required when it holds more than one.
        max_voxels: the most voxels of the volume read; checked from the header, before the
            voxels are read.

    Raises:
        MediaLoadError: a missing file or unknown suffix; a header nibabel cannot read or whose
            data does not match it (truncated); a singular or non-finite affine; not 3-D (or
            4-D without ``index``); too many voxels; a NaN or infinite voxel; not numbers.

    Examples:
        >>> np.save("ct.npy", np.ones((4, 5, 6), dtype=np.int16))
        >>> volume = read_volume("ct.npy")
        >>> tuple(volume.data.shape), volume.data.dtype, volume.affine[0].tolist()
        ((4, 5, 6), torch.float32, [1.0, 0.0, 0.0, 0.0])
        >>> np.save("bad.npy", np.full((2, 2, 2), np.nan))
        >>> read_volume("bad.npy")
        Traceback (most recent call last):
        ...
        gradcam.errors.MediaLoadError: bad.npy: 8 voxels are NaN or infinite: mask or fill \
them before explaining
    """
    file = Path(path)
    name = file.name
    if not file.is_file():
        raise MediaLoadError(f"{name}: no such file")
    suffix = _suffix(file)
    if suffix not in VOLUME_SUFFIXES:
        raise MediaLoadError(f"{name}: a volume is a {', '.join(VOLUME_SUFFIXES)} file")
    header: Any = None
    if suffix == ".npy":
        try:
            array = np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise MediaLoadError(f"{name}: not a readable .npy array ({_one_line(exc)})") from None
        if array.dtype.kind not in "biuf":
            raise MediaLoadError(f"{name}: holds {array.dtype} values, not numbers")
        affine = np.eye(4)
        shape = tuple(array.shape)
        select = _choose(shape, index, name)
        _check_size(shape[:3], max_voxels, name)
        data = np.asarray(array[select], dtype=np.float32).reshape(shape[:3])
    else:
        import nibabel as nib
        from nibabel.filebasedimages import ImageFileError
        from nibabel.spatialimages import HeaderDataError

        try:
            image: Any = nib.load(file)
            shape = tuple(int(n) for n in image.shape)
            affine = np.asarray(image.affine, dtype=np.float64)
            header = image.header.copy()
        except (ImageFileError, HeaderDataError, OSError, EOFError, ValueError) as exc:
            raise MediaLoadError(
                f"{name}: wrong or unreadable NIfTI header ({_one_line(exc)})"
            ) from None
        if affine.shape != (4, 4) or not np.isfinite(affine).all():
            raise MediaLoadError(f"{name}: wrong NIfTI header: its affine is not finite")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise MediaLoadError(f"{name}: wrong NIfTI header: its affine is singular")
        select = _choose(shape, index, name)
        _check_size(shape[:3], max_voxels, name)
        try:
            data = np.asarray(image.dataobj[select], dtype=np.float32).reshape(shape[:3])
        except (OSError, EOFError, ValueError) as exc:
            raise MediaLoadError(
                f"{name}: truncated or corrupt voxel data ({_one_line(exc)})"
            ) from None
    bad = int(data.size - np.isfinite(data).sum())
    if bad:
        raise MediaLoadError(
            f"{name}: {bad} voxels are NaN or infinite: mask or fill them before explaining"
        )
    return Volume(torch.from_numpy(np.ascontiguousarray(data)), affine, header)


def _check_size(shape: tuple[int, ...], max_voxels: int, name: str) -> None:
    voxels = math.prod(shape)
    if voxels == 0:
        raise MediaLoadError(f"{name}: the volume {shape} is empty")
    if voxels > max_voxels:
        raise MediaLoadError(
            f"{name}: a volume of {voxels} voxels {shape} exceeds the cap of {max_voxels} "
            "(max_voxels)"
        )


@dataclass(frozen=True)
class VolumePreprocess:
    """Turn a :class:`Volume` into a ``(1, 1, D, H, W)`` model input: the documented default.

    Intensities are z-scored over all voxels, ``(v - mean) / std`` (a constant volume becomes
    zeros), as MONAI's ``NormalizeIntensity`` does by default; ``normalize="minmax"`` maps them
    to [0, 1] instead and ``"none"`` keeps them. With ``size``, the volume is then resized
    trilinearly to the model's grid (``align_corners=False``, the convention
    :func:`resample_map` inverts); voxel axes are kept as stored, never reoriented.

    Examples:
        >>> volume = Volume(torch.tensor([[[1.0, 3.0]]]), np.eye(4))
        >>> VolumePreprocess()(volume).flatten().tolist()
        [-1.0, 1.0]
    """

    size: tuple[int, int, int] | None = None
    normalize: str = "zscore"

    def __post_init__(self) -> None:
        if self.normalize not in ("zscore", "minmax", "none"):
            raise ValueError(
                f"normalize must be 'zscore', 'minmax' or 'none', got {self.normalize!r}"
            )

    def __call__(self, volume: Volume) -> Tensor:
        """The float32 ``(1, 1, D, H, W)`` input of ``volume``."""
        values = volume.data.double()
        if self.normalize == "zscore":
            spread = values.std(unbiased=False)
            values = (values - values.mean()) / spread if spread > 0 else values * 0.0
        elif self.normalize == "minmax":
            low, span = values.min(), values.max() - values.min()
            values = (values - low) / span if span > 0 else values * 0.0
        values = values.float()[None, None]
        if self.size is not None and tuple(values.shape[2:]) != tuple(self.size):
            values = F.interpolate(values, size=self.size, mode="trilinear", align_corners=False)
        return values.contiguous()


def resample_map(map3d: Tensor, shape: tuple[int, ...]) -> Tensor:
    """A ``(d, h, w)`` map on the model's grid, resampled trilinearly to the volume's ``shape``.

    Both grids cover the same box with voxel centres at ``(i + 0.5) * size / n`` (PyTorch's
    ``align_corners=False``, as :class:`VolumePreprocess` resized the input), so the map lines
    up voxel for voxel with the file; values stay in the map's range (NaN becomes 0).

    Examples:
        >>> resample_map(torch.tensor([0.0, 1.0]).view(2, 1, 1), (4, 1, 1)).flatten().tolist()
        [0.0, 0.25, 0.75, 1.0]
    """
    if map3d.dim() != 3:
        raise ValueError(f"a volume map is (d, h, w), got shape {tuple(map3d.shape)}")
    values = torch.nan_to_num(map3d.detach().float().cpu())
    if tuple(values.shape) == tuple(shape):
        return values.clone()
    return F.interpolate(
        values[None, None], size=tuple(shape), mode="trilinear", align_corners=False
    )[0, 0]


def peak_voxel(map3d: Tensor) -> tuple[int, int, int] | None:
    """``(i, j, k)`` of a map's maximum; ``None`` when it points nowhere.

    The rule of :func:`gradcam.maps.peak` in 3-D: NaN and infinite values are ignored, ties go
    to the first voxel in C order, and a map that is empty, has no finite value or is constant
    has no peak.

    Examples:
        >>> m = torch.zeros(2, 3, 4); m[1, 2, 0] = m[1, 2, 3] = 1.0
        >>> peak_voxel(m), peak_voxel(torch.zeros(2, 3, 4))
        ((1, 2, 0), None)
    """
    array = map3d.detach().cpu().double().numpy()
    finite = np.isfinite(array)
    if not finite.any():
        return None
    values = np.where(finite, array, -np.inf)
    if values.max() == array[finite].min():
        return None
    i, j, k = np.unravel_index(int(np.argmax(values)), array.shape)
    return int(i), int(j), int(k)


def write_volume_map(path: PathLike, map3d: Tensor, volume: Volume) -> Path:
    """Write a map, resampled to ``volume``'s grid, as NIfTI (``.nii``, ``.nii.gz``) or ``.npy``.

    The NIfTI file has the input's shape and affine (its qform and sform codes too), float32
    values and no scaling, so 3D Slicer and ITK-SNAP show it over the input, aligned.

    Examples:
        >>> volume = Volume(torch.zeros(4, 4, 2), np.diag([2.0, 2.0, 3.0, 1.0]))
        >>> path = write_volume_map("map.nii.gz", torch.rand(2, 2, 2), volume)
        >>> back = read_volume(path)
        >>> tuple(back.data.shape), back.affine.diagonal().tolist()
        ((4, 4, 2), [2.0, 2.0, 3.0, 1.0])
    """
    target = Path(path)
    suffix = _suffix(target)
    if suffix not in VOLUME_SUFFIXES:
        raise MediaLoadError(f"{target.name}: a volume map is written as .nii, .nii.gz or .npy")
    data = resample_map(map3d, tuple(volume.data.shape)).numpy().astype(np.float32)
    if suffix == ".npy":

        def save(tmp: Path) -> None:
            with tmp.open("wb") as handle:
                np.save(handle, data)

        return write_atomic(target, save)
    payload = _nifti_bytes(data, volume)
    if suffix == ".nii.gz":
        payload = gzip.compress(payload, mtime=0)
    return write_atomic(target, lambda tmp: tmp.write_bytes(payload))


def _nifti_bytes(data: np.ndarray, volume: Volume) -> bytes:
    import nibabel

    nib: Any = nibabel  # nibabel's image classes are untyped
    if isinstance(volume.header, nib.Nifti2Header):
        image: Any = nib.Nifti2Image(data, volume.affine, volume.header.copy())
    elif isinstance(volume.header, nib.Nifti1Header):
        image = nib.Nifti1Image(data, volume.affine, volume.header.copy())
    else:
        image = nib.Nifti1Image(data, volume.affine)
        image.header.set_qform(volume.affine, code=1)
        image.header.set_sform(volume.affine, code=1)
    header = image.header
    header.set_data_dtype(np.float32)
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"], header["cal_max"] = 0.0, 1.0
    header["descrip"] = b"gradcam map"
    header["intent_code"] = 0
    return bytes(image.to_bytes())


def _gray(values: np.ndarray, low: float, high: float) -> Image.Image:
    scaled = (values - low) / (high - low) if high > low else values * 0.0
    return Image.fromarray((np.clip(scaled, 0, 1) * 255 + 0.5).astype(np.uint8)).convert("RGB")


def _upright(plane: np.ndarray) -> np.ndarray:
    """A slice ``(a, b)`` shown with ``a`` to the right and ``b`` up."""
    return np.ascontiguousarray(np.flipud(plane.T))


def write_peak_slices(
    path: PathLike,
    volume: Volume,
    map3d: Tensor,
    *,
    colormap: str = "jet",
    alpha: float = 0.5,
    gap: int = 4,
    min_side: int = 256,
) -> Path:
    """Write the three orthogonal slices through the map's peak, overlaid, as one PNG.

    The map is resampled to the volume's grid; the slices cross at :func:`peak_voxel` (the
    volume's centre when the map is constant). Left to right: the slice across the first axis
    (``(Y, Z)``, sagittal in RAS files), across the second (``(X, Z)``, coronal) and across the
    third (``(X, Y)``, axial), each with its first axis to the right and its second up, in
    voxels (not millimetres). The gray scale spans the volume's 1st to 99th percentile; every
    panel is enlarged by the integer ``max(1, min_side // max(X, Y, Z))`` (nearest), so the PNG
    is ``s * (Y + 2X) + 2 * gap`` wide and ``s * max(Y, Z)`` high.

    Examples:
        >>> volume = Volume(torch.rand(10, 20, 30), np.eye(4))
        >>> Image.open(write_peak_slices("peak.png", volume, torch.rand(5, 5, 5))).size
        (328, 240)
    """
    data = volume.data.numpy()
    placed = resample_map(map3d, tuple(data.shape)).numpy()
    centre = peak_voxel(torch.from_numpy(placed)) or tuple(n // 2 for n in data.shape)
    i, j, k = centre
    low, high = (float(v) for v in np.percentile(data, [1, 99]))
    scale = max(1, min_side // max(data.shape))
    panels = []
    for plane, heat in (
        (data[i, :, :], placed[i, :, :]),
        (data[:, j, :], placed[:, j, :]),
        (data[:, :, k], placed[:, :, k]),
    ):
        picture = overlay(
            _gray(_upright(plane), low, high),
            torch.from_numpy(_upright(heat)),
            colormap,
            alpha,
            normalized=True,
        )
        panels.append(
            picture.resize(
                (picture.width * scale, picture.height * scale), Image.Resampling.NEAREST
            )
        )
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    sheet = Image.new("RGB", (width, max(p.height for p in panels)), (0, 0, 0))
    left = 0
    for panel in panels:
        sheet.paste(panel, (left, 0))
        left += panel.width + gap
    return write_atomic(path, lambda tmp: sheet.save(tmp, format="PNG"))


def write_volume_outputs(
    folder: PathLike,
    volume: Volume,
    map3d: Tensor,
    *,
    stem: str = "volume",
    colormap: str = "jet",
    alpha: float = 0.5,
) -> list[Path]:
    """Write a volume's explanation into ``folder``: ``{stem}_map.nii.gz`` (the map on the
    input's grid, with its affine: the identity for a ``.npy`` input) and
    ``{stem}_peak_slices.png``. The folder is checked before any work.

    Examples:
        >>> volume = Volume(torch.rand(6, 6, 6), np.eye(4))
        >>> [p.name for p in write_volume_outputs("out", volume, torch.rand(3, 3, 3))]
        ['volume_map.nii.gz', 'volume_peak_slices.png']
    """
    where = output_folder(folder)
    return [
        write_volume_map(where / f"{stem}_map.nii.gz", map3d, volume),
        write_peak_slices(
            where / f"{stem}_peak_slices.png", volume, map3d, colormap=colormap, alpha=alpha
        ),
    ]
