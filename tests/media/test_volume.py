"""gradcam.media.volume: real MRIs in, maps aligned on the input grid out; bad files refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradcam.errors import GradCAMError, MediaLoadError
from gradcam.media.volume import (
    Volume,
    VolumePreprocess,
    peak_voxel,
    read_volume,
    resample_map,
    write_peak_slices,
    write_volume_map,
    write_volume_outputs,
)

nib = pytest.importorskip("nibabel")

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
ANATOMICAL = NIBABEL_DATA / "anatomical.nii"
EXAMPLE_4D = NIBABEL_DATA / "example4d.nii.gz"


def _one_line(exc: pytest.ExceptionInfo[MediaLoadError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def test_real_mri_round_trip(tmp_path: Path) -> None:
    volume = read_volume(ANATOMICAL)
    image = nib.load(ANATOMICAL)
    assert tuple(volume.data.shape) == image.shape
    assert np.array_equal(volume.affine, image.affine)
    assert torch.equal(volume.data, torch.from_numpy(image.get_fdata(dtype=np.float32)))
    model_input = VolumePreprocess(size=(16, 16, 16))(volume)
    assert model_input.shape == (1, 1, 16, 16, 16)
    fake = torch.rand(16, 16, 16)
    written = write_volume_outputs(tmp_path / "out", volume, fake, stem="anatomical")
    assert [p.name for p in written] == ["anatomical_map.nii.gz", "anatomical_peak_slices.png"]
    back = nib.load(written[0])
    assert back.shape == image.shape
    assert np.array_equal(back.affine, image.affine)
    assert np.array_equal(back.header.get_zooms(), image.header.get_zooms())
    assert back.header.get_qform(coded=True)[1] == image.header.get_qform(coded=True)[1]
    # float32 in the input header's own byte order (anatomical.nii is big-endian)
    assert back.get_data_dtype().newbyteorder("=") == np.float32
    assert np.allclose(back.get_fdata(), resample_map(fake, image.shape).numpy())
    x, y, z = image.shape
    scale = 256 // max(image.shape)
    assert Image.open(written[1]).size == (scale * (y + 2 * x) + 8, scale * max(y, z))


def test_4d_needs_a_volume_index() -> None:
    with pytest.raises(MediaLoadError) as exc:
        read_volume(EXAMPLE_4D)
    assert "choose one with a volume index (0 to 1)" in _one_line(exc)
    image = nib.load(EXAMPLE_4D)
    second = read_volume(EXAMPLE_4D, index=1)
    assert torch.equal(second.data, torch.from_numpy(image.dataobj[..., 1].astype(np.float32)))
    with pytest.raises(MediaLoadError, match="volume index 2 is out of range"):
        read_volume(EXAMPLE_4D, index=2)


def test_mni152_template() -> None:
    nilearn = pytest.importorskip("nilearn")
    template = next(
        (Path(nilearn.__file__).parent / "datasets" / "data").glob("mni_icbm152_t1_*.nii.gz")
    )
    volume = read_volume(template)
    assert tuple(volume.data.shape) == (197, 233, 189)
    model_input = VolumePreprocess(size=(32, 32, 32))(volume)
    assert torch.isfinite(model_input).all()
    # A brain: the centre is brighter than the corner (air).
    assert model_input[0, 0, 16, 16, 16] > model_input[0, 0, 0, 0, 0]


def test_npy_volume_and_index(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 4 * 2, dtype=np.int16).reshape(2, 3, 4, 2)
    np.save(tmp_path / "v.npy", data)
    volume = read_volume(tmp_path / "v.npy", index=0)
    assert torch.equal(volume.data, torch.from_numpy(data[..., 0].astype(np.float32)))
    assert volume.header is None and np.array_equal(volume.affine, np.eye(4))


def test_resampling_is_exact() -> None:
    ramp = torch.tensor([0.0, 1.0]).view(2, 1, 1).expand(2, 2, 2)
    up = resample_map(ramp, (4, 3, 5))
    assert torch.equal(up[:, 1, 2], torch.tensor([0.0, 0.25, 0.75, 1.0]))
    assert torch.equal(up, up[:, :1, :1].expand(4, 3, 5))  # constant along the other axes
    same = torch.rand(3, 4, 5)
    assert torch.equal(resample_map(same, (3, 4, 5)), same)
    # Down by 2 on the same box: each new voxel centre is the mean of two old ones.
    fine = torch.arange(8.0).view(8, 1, 1)
    assert resample_map(fine, (4, 1, 1)).flatten().tolist() == [0.5, 2.5, 4.5, 6.5]


def test_preprocess_then_map_lines_up() -> None:
    # A volume whose map is its own (min-max) intensity: written back, the map is the volume.
    data = torch.arange(6.0).view(6, 1, 1).expand(6, 4, 4).contiguous()
    volume = Volume(data, np.eye(4))
    model_input = VolumePreprocess(size=(6, 4, 4), normalize="minmax")(volume)[0, 0]
    assert torch.allclose(resample_map(model_input, (6, 4, 4)), data / 5.0)
    z = VolumePreprocess()(volume)
    assert z.mean().abs() < 1e-6 and (z.std(unbiased=False) - 1).abs() < 1e-6


def test_peak_slices_cross_at_the_peak(tmp_path: Path) -> None:
    volume = Volume(torch.zeros(8, 8, 8), np.eye(4))
    heat = torch.zeros(8, 8, 8)
    heat[2, 5, 6] = 1.0
    assert peak_voxel(heat) == (2, 5, 6)
    path = write_peak_slices(tmp_path / "p.png", volume, heat, alpha=1.0, gap=0, min_side=8)
    picture = np.asarray(Image.open(path))
    assert picture.shape == (8, 24, 3)
    # The hottest pixel of each panel is the peak: jet's dark red at 1.0.
    sagittal, coronal, axial = picture[:, :8], picture[:, 8:16], picture[:, 16:]
    assert (
        tuple(sagittal[8 - 1 - 6, 5]) == tuple(coronal[8 - 1 - 6, 2]) == tuple(axial[8 - 1 - 5, 2])
    )
    assert sagittal[8 - 1 - 6, 5, 0] > 100 and sagittal[8 - 1 - 6, 5, 2] < 50


def test_nan_voxels(tmp_path: Path) -> None:
    data = np.ones((4, 4, 4), dtype=np.float32)
    data[1, 2, 3] = np.nan
    data[0, 0, 0] = np.inf
    with pytest.raises(MediaLoadError) as exc:
        read_volume(_nifti(tmp_path / "nan.nii.gz", data))
    assert "2 voxels are NaN or infinite" in _one_line(exc)


def test_wrong_headers(tmp_path: Path) -> None:
    raw = ANATOMICAL.read_bytes()
    cases = {
        "magic.nii": raw[:344] + b"xxxx" + raw[348:],
        "truncated.nii": raw[: len(raw) // 2],
        "header_only.nii": raw[:200],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(MediaLoadError) as exc:
            read_volume(tmp_path / name)
        assert name in _one_line(exc)
    # nibabel will not write a singular affine: set the sform's third row to zeros by hand.
    header = bytearray(_nifti(tmp_path / "ok.nii", np.ones((2, 2, 2), np.float32)).read_bytes())
    header[252:256] = np.array([0, 1], dtype="<i2").tobytes()  # qform_code 0, sform_code 1
    header[312:328] = np.zeros(4, dtype="<f4").tobytes()  # srow_z
    (tmp_path / "flat.nii").write_bytes(bytes(header))
    with pytest.raises(MediaLoadError, match="affine is singular"):
        read_volume(tmp_path / "flat.nii")


def test_wrong_dimensions_and_caps(tmp_path: Path) -> None:
    np.save(tmp_path / "plane.npy", np.zeros((4, 4)))
    with pytest.raises(MediaLoadError, match=r"must be 3-D, the file holds shape \(4, 4\)"):
        read_volume(tmp_path / "plane.npy")
    np.save(tmp_path / "big.npy", np.zeros((10, 10, 10)))
    with pytest.raises(MediaLoadError, match=r"1000 voxels .* exceeds the cap of 999"):
        read_volume(tmp_path / "big.npy", max_voxels=999)
    np.save(tmp_path / "text.npy", np.array([["a"]]))
    with pytest.raises(MediaLoadError, match="not numbers"):
        read_volume(tmp_path / "text.npy")
    with pytest.raises(MediaLoadError, match="a volume index was given"):
        read_volume(tmp_path / "big.npy", index=0)


def test_map_suffix_refused_before_writing(tmp_path: Path) -> None:
    volume = Volume(torch.zeros(2, 2, 2), np.eye(4))
    with pytest.raises(MediaLoadError, match=r"\.nii, \.nii\.gz or \.npy"):
        write_volume_map(tmp_path / "map.mha", torch.rand(2, 2, 2), volume)
    assert list(tmp_path.iterdir()) == []


def test_npy_input_map_opens_as_nifti(tmp_path: Path) -> None:
    volume = Volume(torch.zeros(3, 4, 5), np.eye(4))
    path = write_volume_map(tmp_path / "m.nii", torch.ones(3, 4, 5), volume)
    back = nib.load(path)
    assert back.shape == (3, 4, 5) and np.array_equal(back.affine, np.eye(4))
    assert np.array_equal(back.get_fdata(), np.ones((3, 4, 5)))


def test_map_of_one_volume_of_a_4d_file(tmp_path: Path) -> None:
    volume = read_volume(EXAMPLE_4D, index=0)
    path = write_volume_map(tmp_path / "m.nii.gz", torch.rand(8, 8, 8), volume)
    image, back = nib.load(EXAMPLE_4D), nib.load(path)
    assert back.shape == image.shape[:3]
    assert np.array_equal(back.affine, image.affine)
    assert back.header.get_zooms() == image.header.get_zooms()[:3]


def test_output_folder_checked_before_work(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    volume = Volume(torch.zeros(2, 2, 2), np.eye(4))
    with pytest.raises(GradCAMError, match="is a file, or lies under one"):
        write_volume_outputs(tmp_path / "f.txt" / "out", volume, torch.rand(2, 2, 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
