"""gradcam.explain_media: a real animated GIF through r3d_18, a real MRI through a user's Conv3d
model, a signal through a user's Conv1d model; the written maps are Grad-CAM's on the
preprocessed input; bad files and mismatched models refused in one line, nothing written."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from helpers.caches import fill_torchvision
from PIL import Image

import gradcam
from gradcam.errors import GradCAMError, MediaLoadError
from gradcam.explain_media import check_media, explain_media, file_kind, media_preprocess
from gradcam.media.video import read_video, video_preprocess, write_video_overlay
from gradcam.media.volume import read_volume, resample_map
from gradcam.models import input_signature, kinetics_classes, load_model

pytest.importorskip("av")
nib = pytest.importorskip("nibabel")

GIF = Path(skimage.data.__file__).parent / "no_time_for_that_tiny.gif"
ANATOMICAL = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"

NETS = """
from torch import nn


def volume_net():
    return nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 6, 3, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(6, 3),
    )


def clip_net():
    return nn.Sequential(
        nn.Conv3d(3, 4, (5, 3, 3)), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
        nn.Linear(4, 2),
    )


def signal_net():
    return nn.Sequential(
        nn.Conv1d(2, 4, 5), nn.ReLU(), nn.Conv1d(4, 4, 5, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 3),
    )
"""


@pytest.fixture
def nets(tmp_path: Path) -> Path:
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    return path


def _load(name: str, weights: str = "random", **kwargs: object) -> gradcam.LoadedModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights, asked for
        return load_model(name, weights, **kwargs)  # type: ignore[arg-type]


def _one_line(exc: pytest.ExceptionInfo[GradCAMError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def _gradcam(loaded: gradcam.LoadedModel, x: torch.Tensor, target: int) -> torch.Tensor:
    return gradcam.GradCAM(loaded.module, loaded.default_layer)(x, target).maps[0, 0]


def test_gif_through_r3d18_pretrained(tmp_path: Path) -> None:
    fill_torchvision("r3d_18")  # generated weights at the checkpoint path: nothing downloads
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pretrained: no random-weights warning
        loaded = load_model("r3d_18", input_size=(4, 32, 32))
    assert loaded.pretrained and loaded.class_names == kinetics_classes()
    assert (loaded.input_rank, loaded.input_channels, loaded.default_layer) == (3, 3, "layer4")
    summary = explain_media(loaded, GIF, tmp_path / "out", top_k=2)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    first = summary["maps"][0]
    stem = f"gradcam_1_{first['name'].replace(' ', '-')}"
    assert f"{stem}_overlay.gif" in files and f"{stem}_overlay.mp4" in files
    assert len(files) == 2 * 4 + 1  # per class: GIF, MP4, key frames, maps; summary.json
    # the animated overlay has one picture per frame of the GIF, the MP4 decodes whole
    with Image.open(tmp_path / "out" / f"{stem}_overlay.gif") as gif:
        assert gif.n_frames == 24 and gif.size == (14, 25)
    assert read_video(tmp_path / "out" / f"{stem}_overlay.mp4").frames.shape[0] == 24
    with Image.open(tmp_path / "out" / f"{stem}_keyframes.png") as strip:
        assert strip.size == (8 * 14 + 7 * 2, 25)
    # the maps written are Grad-CAM's on the model's own preprocessing of the clip
    x = media_preprocess(loaded, "video")(read_video(GIF).frames)  # type: ignore[arg-type]
    assert tuple(x.shape) == (1, 3, 4, 32, 32) and summary["input_shape"] == [1, 3, 4, 32, 32]
    saved = np.load(tmp_path / "out" / f"{stem}_maps.npz")
    expected = _gradcam(loaded, x, first["class"])
    assert np.allclose(saved["maps"], expected.numpy(), atol=1e-5)
    assert saved["frame_index"].tolist() == [3, 9, 15, 21]
    assert summary["predictions"][0]["class"] == first["class"]
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk == summary and on_disk["kind"] == "video"
    peak = first["peak"]
    assert 0 <= peak["frame"] < 24 and 0 <= peak["x"] < 14 and 0 <= peak["y"] < 25


def test_video_models_keep_their_own_preprocessing() -> None:
    loaded = _load("r3d_18", layer="layer4")  # a layer given: no probe pass
    assert media_preprocess(loaded, "video") == video_preprocess("r3d_18")
    assert loaded.class_names[0] == "abseiling"


def test_mri_through_a_users_conv3d_model(tmp_path: Path, nets: Path) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "volume.pt"
    torch.save(_load(f"{nets}:volume_net").module.state_dict(), weights)
    loaded = load_model(f"{nets}:volume_net", weights, input_size=(16, 16, 16))
    assert (loaded.input_rank, loaded.input_channels, loaded.pretrained) == (3, 1, True)
    summary = explain_media(loaded, ANATOMICAL, tmp_path / "mri", classes=[2])
    written = tmp_path / "mri" / "gradcam_1_class-2_map.nii.gz"
    assert summary["maps"][0]["files"] == [written.name, "gradcam_1_class-2_peak_slices.png"]
    image, back = nib.load(ANATOMICAL), nib.load(written)
    assert back.shape == image.shape and np.array_equal(back.affine, image.affine)
    volume = read_volume(ANATOMICAL)
    x = media_preprocess(loaded, "volume")(volume)  # type: ignore[arg-type]
    expected = resample_map(_gradcam(loaded, x, 2), tuple(volume.data.shape))
    assert np.allclose(np.asarray(back.dataobj), expected.numpy(), atol=1e-5)
    peak = np.unravel_index(int(np.argmax(expected.numpy())), image.shape)
    assert summary["maps"][0]["peak"] == {"voxel": [int(v) for v in peak]}
    with Image.open(tmp_path / "mri" / "gradcam_1_class-2_peak_slices.png") as png:
        assert png.size[1] > 0


def test_signal_through_a_package_factory(
    tmp_path: Path, nets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "mysignals"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mysignals", raising=False)
    loaded = _load("mysignals.nets:signal_net")
    assert (loaded.input_rank, loaded.input_channels) == (1, 2)
    t = np.linspace(0, 12, 300)
    np.save(tmp_path / "ecg.npy", np.stack([np.sin(t), np.cos(3 * t)]).astype(np.float32))
    summary = explain_media(loaded, tmp_path / "ecg.npy", tmp_path / "ecg", classes=[1])
    files = summary["maps"][0]["files"]
    assert files == ["gradcam_1_class-1_map.png", "gradcam_1_class-1_map.npy"]
    with Image.open(tmp_path / "ecg" / files[0]) as png:
        assert png.size == (1000, 2 * 120 + 60)
    from gradcam.media.signal import read_signal

    x = media_preprocess(loaded, "signal")(read_signal(tmp_path / "ecg.npy"))  # type: ignore[arg-type]
    expected = _gradcam(loaded, x, 1)
    assert np.allclose(np.load(tmp_path / "ecg" / files[1]), expected.numpy(), atol=1e-5)
    assert summary["maps"][0]["peak"] == {"sample": int(np.argmax(expected.numpy()))}


def test_a_2d_model_given_a_video_names_both(tmp_path: Path) -> None:
    shapes = load_model("shapes")
    with pytest.raises(GradCAMError) as exc:
        explain_media(shapes, GIF, tmp_path / "out")
    message = _one_line(exc)
    assert "no_time_for_that_tiny.gif is a video" in message
    assert "model 'shapes' takes 2-D images" in message
    assert not (tmp_path / "out").exists()


def test_a_3d_model_given_a_photo_or_signal(nets: Path) -> None:
    loaded = _load(f"{nets}:volume_net", layer="0")
    with pytest.raises(GradCAMError, match=r"cat.jpg is an image \(2-D\), but model .* takes 3-D"):
        check_media(loaded, "image", "cat.jpg")
    with pytest.raises(GradCAMError, match=r"ecg.csv is a signal \(1-D\).*nn.Conv1d"):
        check_media(loaded, "signal", "ecg.csv")
    with pytest.raises(GradCAMError, match=r"a video of 3 channels, but model .* takes 1"):
        check_media(loaded, "video", "clip.mp4")
    check_media(load_model("shapes"), "image", "cat.jpg")  # a photo model: as before


def test_pixel_methods_are_refused_on_media(nets: Path) -> None:
    loaded = _load(f"{nets}:volume_net", layer="0")
    with pytest.raises(GradCAMError, match="guided-backprop gives pixel-space maps"):
        check_media(loaded, "volume", "ct.nii", ["gradcam", "guided-backprop"])


def test_nan_voxels_and_wrong_header_write_nothing(tmp_path: Path, nets: Path) -> None:
    loaded = _load(f"{nets}:volume_net", layer="2")
    data = np.ones((8, 8, 8), np.float32)
    data[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii.gz")
    raw = ANATOMICAL.read_bytes()
    (tmp_path / "magic.nii").write_bytes(raw[:344] + b"xxxx" + raw[348:])
    for name, words in (("nan.nii.gz", "1 voxels are NaN"), ("magic.nii", "NIfTI header")):
        with pytest.raises(MediaLoadError) as exc:
            explain_media(loaded, tmp_path / name, tmp_path / "out")
        assert words in _one_line(exc)
        assert not (tmp_path / "out").exists()


def test_truncated_mp4_writes_nothing(tmp_path: Path) -> None:
    loaded = _load("r3d_18", layer="layer4", input_size=(4, 16, 16))
    frames = (torch.rand(12, 32, 48, 3) * 255).to(torch.uint8)
    whole = write_video_overlay(tmp_path / "clip.mp4", frames, torch.rand(3, 4, 4), fps=12)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])
    with pytest.raises(MediaLoadError) as exc:
        explain_media(loaded, cut, tmp_path / "out")
    assert "cut.mp4" in _one_line(exc) and "truncated" in str(exc.value)
    assert not (tmp_path / "out").exists()


def test_clip_shorter_than_the_temporal_kernel(tmp_path: Path, nets: Path) -> None:
    with pytest.raises(GradCAMError) as exc:
        _load(f"{nets}:clip_net", input_size=(3, 16, 16))  # the kernel spans 5 frames
    assert "too small for the model: 3 x 16 x 16" in _one_line(exc)
    loaded = _load(f"{nets}:clip_net", layer="0", input_size=(3, 16, 16))  # no probe
    with pytest.raises(GradCAMError) as exc:
        explain_media(loaded, GIF, tmp_path / "out")
    assert "input axis D has 3 positions, fewer than the 5" in _one_line(exc)
    assert not (tmp_path / "out").exists()
    # five frames are enough
    summary = explain_media(_load(f"{nets}:clip_net", input_size=(5, 16, 16)), GIF, tmp_path / "ok")
    assert summary["input_shape"] == [1, 3, 5, 16, 16]


def test_signal_channels_must_match(tmp_path: Path, nets: Path) -> None:
    loaded = _load(f"{nets}:signal_net", layer="0")
    np.save(tmp_path / "one.npy", np.zeros(100, np.float32))
    with pytest.raises(GradCAMError, match=r"a signal of 1 channels, but model .* takes 2"):
        explain_media(loaded, tmp_path / "one.npy", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_input_size_must_fit_the_model(nets: Path) -> None:
    with pytest.raises(GradCAMError, match=r"input size \(16, 16\) does not fit"):
        _load(f"{nets}:volume_net", input_size=(16, 16))
    with pytest.raises(GradCAMError, match="an input size is for clips, volumes and signals"):
        load_model("shapes", input_size=(64, 64))


def test_input_signature_and_still_gifs(tmp_path: Path) -> None:
    assert input_signature(torch.nn.Conv1d(7, 2, 3)) == (1, 7)
    Image.new("RGB", (8, 8)).save(tmp_path / "still.gif")
    assert file_kind(tmp_path / "still.gif") is None and file_kind(GIF) == "video"
    with pytest.raises(MediaLoadError, match="not a video, volume or signal"):
        explain_media(load_model("shapes"), tmp_path / "still.gif", tmp_path / "out")
