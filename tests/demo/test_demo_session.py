"""The demo's callbacks as plain functions: exact agreement with the library, caching, bad input."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.photos import CAT_CLASSES, ESPRESSO, cat_and_coffee, photo
from PIL import Image

import gradcam
from gradcam import GradCAM, ImageLoadError, LayerError, TargetError, load_image
from gradcam.demo import DemoSession


@pytest.fixture(scope="module")
def session(lite0: gradcam.LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> DemoSession:
    return DemoSession(lite0, folder=tmp_path_factory.mktemp("downloads"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    both, _ = cat_and_coffee()
    paths = {
        "both": folder / "both.png",
        "cat": folder / "cat.png",
        "coffee": folder / "coffee.png",
    }
    both.save(paths["both"])
    photo("chelsea.png").save(paths["cat"])
    photo("coffee.png").save(paths["coffee"])
    return paths


def library_cam(lite0: gradcam.LoadedModel, path: Path, class_id: int, layer: str | None = None):  # type: ignore[no-untyped-def]
    x = lite0.preprocess(load_image(path))
    return GradCAM(lite0.module, layer)(x, [class_id])


def test_top1_map_equals_the_library(
    session: DemoSession, lite0: gradcam.LoadedModel, photos: dict[str, Path]
) -> None:
    views = session.explain(photos["cat"])
    expected = library_cam(lite0, photos["cat"], views.class_id)
    assert expected.logits is not None
    assert views.class_id == int(expected.logits[0].argmax())
    assert views.class_id in CAT_CLASSES
    torch.testing.assert_close(
        views.explanation.results["gradcam"].raw, expected.raw, rtol=1e-5, atol=1e-6
    )
    assert [p.class_id for p in views.predictions] == expected.logits[0].topk(5).indices.tolist()
    probabilities = [p.probability for p in views.predictions]
    assert probabilities == sorted(probabilities, reverse=True)
    assert list(views.pictures) == [
        "Localization",
        "Grad-CAM",
        "Counterfactual",
        "Guided Backprop",
        "Guided Grad-CAM",
    ]
    assert all(p.size == (451, 300) for p in views.pictures.values())


def test_class_by_name_localizes_the_coffee(session: DemoSession, photos: dict[str, Path]) -> None:
    both = Image.open(photos["both"])
    split = photo("chelsea.png").width
    espresso = session.explain(photos["both"], "espresso")
    cat = session.explain(photos["both"], "Egyptian cat")
    assert espresso.class_id == ESPRESSO and cat.class_id == 285
    # The espresso box lies over the coffee (right), the cat's box mostly over the cat (left).
    assert espresso.box[0] >= split - 20 and espresso.box[2] < both.width
    assert (cat.box[0] + cat.box[2]) / 2 < split
    assert not torch.equal(
        espresso.explanation.results["gradcam"].raw, cat.explanation.results["gradcam"].raw
    )


def test_cache_skips_the_model(
    session: DemoSession, photos: dict[str, Path], forward_count: list[int]
) -> None:
    first = session.explain(photos["coffee"])
    assert forward_count[0] == 1 and not first.cached
    again = session.explain(photos["coffee"])  # same photo, default class and layer
    assert forward_count[0] == 1 and again.cached and again.seconds == 0.0
    other = session.explain(photos["coffee"], "espresso maker")  # a new class: one pass
    assert forward_count[0] == 2 and other.class_name == "espresso maker"
    back = session.explain(photos["coffee"], first.class_name)
    assert forward_count[0] == 2 and back.cached
    assert back.predictions == first.predictions  # top-5 kept per photo
    assert torch.equal(
        back.explanation.results["gradcam"].raw, first.explanation.results["gradcam"].raw
    )


def test_layer_changes_the_map(
    session: DemoSession, lite0: gradcam.LoadedModel, photos: dict[str, Path]
) -> None:
    names = [name for name, _ in session.layers]
    assert names[-1] == session.default_layer == "_head_act"
    deep = session.explain(photos["cat"], "tabby")
    shallow = session.explain(photos["cat"], "tabby", "_blocks.10")
    assert deep.explanation.results["gradcam"].raw.shape[-2:] == (7, 11)
    assert shallow.explanation.results["gradcam"].raw.shape[-2:] == (14, 22)
    expected = library_cam(lite0, photos["cat"], shallow.class_id, "_blocks.10")
    torch.testing.assert_close(
        shallow.explanation.results["gradcam"].raw, expected.raw, rtol=1e-5, atol=1e-6
    )


def test_downloads(session: DemoSession, photos: dict[str, Path]) -> None:
    views = session.explain(photos["cat"], "tabby")
    path = session.write_maps(views)
    with np.load(path, allow_pickle=False) as arrays:
        raw = views.explanation.results["gradcam"].raw[0, 0].numpy()
        np.testing.assert_array_equal(arrays["raw"], raw)
        assert arrays["maps"].shape == arrays["input"].shape[-2:]
        assert arrays["guided_gradcam_maps"].shape == arrays["input"].shape[1:]
        assert arrays["counterfactual_raw"].shape == raw.shape
        assert arrays["classes"].tolist() == [281] and str(arrays["layer"]) == "_head_act"
        assert tuple(arrays["box"].tolist()) == views.box
    figure = Image.open(session.write_figure(views))
    assert figure.height == 300 + 18 and figure.width > 6 * 451


def test_concurrent_calls_get_their_own_maps(
    lite0: gradcam.LoadedModel, photos: dict[str, Path], tmp_path: Path
) -> None:
    session = DemoSession(lite0, folder=tmp_path)  # a cold cache: both threads run the model
    barrier = threading.Barrier(2)
    found: dict[str, torch.Tensor] = {}

    def work(name: str) -> None:
        barrier.wait()
        for _ in range(3):
            found[name] = (
                session.explain(photos[name], "espresso").explanation.results["gradcam"].raw
            )

    threads = [threading.Thread(target=work, args=(n,)) for n in ("cat", "coffee")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in ("cat", "coffee"):
        expected = library_cam(lite0, photos[name], ESPRESSO).raw
        torch.testing.assert_close(found[name], expected, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> DemoSession:
    """The small shipped CNN: decoding checks need exact maps, not ImageNet classes."""
    return DemoSession(gradcam.load_model("shapes"), folder=tmp_path_factory.mktemp("shapes"))


def _raw(session: DemoSession, path: Path) -> torch.Tensor:
    return session.explain(path, 0).explanation.results["gradcam"].raw


def test_odd_photos_are_decoded_right(shapes: DemoSession, tmp_path: Path) -> None:
    cat = photo("chelsea.png")
    gray = cat.convert("L")
    gray.save(tmp_path / "gray.png")
    reference = _raw(shapes, tmp_path / "gray.png")
    # 16-bit: the same gray levels times 257 are the same photo.
    sixteen = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
    sixteen.save(tmp_path / "gray16.png")
    assert torch.equal(_raw(shapes, tmp_path / "gray16.png"), reference)
    # Opaque RGBA is the RGB photo.
    cat.save(tmp_path / "rgb.png")
    upright = _raw(shapes, tmp_path / "rgb.png")
    rgba = cat.copy()
    rgba.putalpha(255)
    rgba.save(tmp_path / "rgba.png")
    assert torch.equal(_raw(shapes, tmp_path / "rgba.png"), upright)
    # EXIF orientation 6: stored turned a quarter clockwise, displayed upright.
    exif = Image.Exif()
    exif[0x0112] = 6
    cat.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "exif.png", exif=exif)
    rotated = shapes.explain(tmp_path / "exif.png", 0)
    assert rotated.photo.image.size == rotated.photo.display.size == cat.size
    assert torch.equal(rotated.explanation.results["gradcam"].raw, upright)


def test_cmyk_photo_is_still_a_cat(session: DemoSession, tmp_path: Path) -> None:
    photo("chelsea.png").convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    cmyk = session.explain(tmp_path / "cmyk.jpg")
    assert cmyk.photo.image.mode == "RGB" and cmyk.class_id in CAT_CLASSES


def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    text = folder / "notes.jpg"
    text.write_text("these are my notes, not a photo")
    buffer = folder / "full.png"
    photo("coffee.png").save(buffer)
    truncated = folder / "truncated.png"
    truncated.write_bytes(buffer.read_bytes()[:5000])
    return {
        "text": (text, "notes.jpg: not an image file"),
        "truncated": (truncated, "truncated.png: corrupt or truncated"),
        "missing": (folder / "gone.png", "gone.png: no such file"),
    }


@pytest.mark.parametrize("kind", ["text", "truncated", "missing"])
def test_bad_uploads_are_named(session: DemoSession, tmp_path: Path, kind: str) -> None:
    path, message = _bad_files(tmp_path)[kind]
    with pytest.raises(ImageLoadError, match=message) as caught:
        session.explain(path)
    # The server's temporary folder means nothing to a visitor and is not shown.
    assert str(tmp_path) not in str(caught.value)


def test_no_upload(session: DemoSession) -> None:
    with pytest.raises(ImageLoadError, match="no photo given"):
        session.explain(None)


def test_upload_too_large(lite0: gradcam.LoadedModel, tmp_path: Path) -> None:
    photo("coffee.png").save(tmp_path / "big.png")
    small = DemoSession(lite0, max_bytes=10_000, folder=tmp_path)
    with pytest.raises(ImageLoadError, match=r"big.png: file too large \(0\.\d MB > 0\.0095"):
        small.explain(tmp_path / "big.png")


def test_decompression_bomb(
    session: DemoSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Image.new("RGB", (200, 200)).save(tmp_path / "bomb.png")
    # Pillow refuses images over twice its pixel limit: lower it instead of shipping a bomb.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    with pytest.raises(ImageLoadError, match=r"bomb\.png: image too large to decode safely"):
        session.explain(tmp_path / "bomb.png")


def test_bad_class_and_layer(session: DemoSession, photos: dict[str, Path]) -> None:
    with pytest.raises(TargetError, match="no class named 'espreso'; did you mean 'espresso'"):
        session.explain(photos["cat"], "espreso")
    with pytest.raises(LayerError, match="no spatial layer named 'fc'"):
        session.explain(photos["cat"], None, "fc")


def test_layer_sweep(
    session: DemoSession, lite0: gradcam.LoadedModel, photos: dict[str, Path]
) -> None:
    assert session.sweep_layers == [
        "_blocks.1._bn0",
        "_blocks.3._bn0",
        "_blocks.5._bn0",
        "_blocks.11._bn0",
        "_head_act",
    ]
    panels = session.layer_sweep(photos["cat"], "tabby")
    captions = [caption for caption, _ in panels]
    assert captions[0] == "_blocks.1._bn0 (112×169)" and captions[-1] == "_head_act (7×11)"
    assert all(picture.size == (451, 300) for _, picture in panels)
    # Each panel is the library's Grad-CAM at that layer, drawn by gradcam.overlay.
    raw = library_cam(lite0, photos["cat"], 281, "_blocks.11._bn0").raw[0, 0]
    expected = np.asarray(gradcam.overlay(photo("chelsea.png"), raw), dtype=float)
    drawn = np.asarray(panels[3][1], dtype=float)
    # Same pixels except where the localization box is drawn.
    assert (np.abs(drawn - expected).max(axis=-1) > 2).mean() < 0.05
    assert session.layer_sweep(photos["cat"], "tabby") is panels  # cached


def test_sweep_layers_of_torchvision_models(tmp_path: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights: only layers matter here
        vgg = DemoSession(gradcam.load_model("vgg16", "random"), folder=tmp_path)
        resnet = DemoSession(gradcam.load_model("resnet18", "random"), folder=tmp_path)
    # VGG-16: relu1_2 ... relu5_3, the layers of the paper's Fig. 13.
    assert vgg.sweep_layers == [
        "features.3",
        "features.8",
        "features.15",
        "features.22",
        "features.29",
    ]
    assert resnet.sweep_layers == ["relu", "layer1", "layer2", "layer3", "layer4"]


def test_download_folder_is_bounded(tmp_path: Path) -> None:
    import os

    from gradcam.synthetic import make_scene

    session = DemoSession(gradcam.load_model("shapes"), folder=tmp_path, max_folder_bytes=1)
    scene = tmp_path / "scenes" / "scene.png"
    scene.parent.mkdir()
    make_scene(0).image.save(scene)
    written = []
    for class_id in range(3):
        views = session.explain(scene, class_id)
        written += [session.write_maps(views), session.write_figure(views)]
    # Over the bound, only the file just written for the visitor stays; other files remain.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([written[-1].name, "scenes"])
    again = session.write_maps(views)  # deleted since: written anew
    assert again.is_file() and again == written[-2]
    # With room for a few files, the least recently written go first.
    roomy = DemoSession(session.loaded, folder=tmp_path, max_folder_bytes=10**9)
    files = [roomy.write_maps(roomy.explain(scene, c)) for c in range(4)]
    os.utime(files[0], ns=(1, 1))
    os.utime(files[1], ns=(2, 2))
    os.utime(files[3], ns=(3, 3))
    sizes = {f: f.stat().st_size for f in files}
    roomy.max_folder_bytes = sum(sizes.values()) - 1
    roomy._reuse(files[0])  # used again: now the most recent
    roomy._prune(files[2])
    assert [f.is_file() for f in files] == [True, False, True, True]


def test_close_deletes_the_folder_it_made(tmp_path: Path) -> None:
    import os

    made = DemoSession(gradcam.load_model("shapes"))
    assert made.folder.name.startswith(f"gradcam-demo-{os.getpid()}-")
    made.close()
    assert not made.folder.exists()
    given = DemoSession(made.loaded, folder=tmp_path)
    given.close()
    assert tmp_path.is_dir()  # a folder the caller chose is the caller's


def test_stale_folders_of_stopped_servers_are_deleted(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from gradcam.demo.session import clean_stale_folders

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    dead = int(ended.stdout)
    names = {
        "stale": f"gradcam-demo-{dead}-abc",
        "mine": f"gradcam-demo-{os.getpid()}-def",
        "parent": f"gradcam-demo-{os.getppid()}-ghi",
        "old-style": "gradcam-demo-k2j3h4",
        "other": f"unrelated-{dead}-x",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "maps.npz").write_bytes(b"x")
    (tmp_path / f"gradcam-demo-{dead}-file").write_text("a file, not a folder")
    assert clean_stale_folders(tmp_path) == [tmp_path / names["stale"]]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert names["stale"] not in left and len(left) == len(names)


def test_layer_sweeps_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    import gradcam.demo.session as session_module

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights: only layers matter here
        resnet = DemoSession(gradcam.load_model("resnet18", "random"), folder=tmp_path)
    monkeypatch.setattr(session_module, "MAX_SWEEP_LAYERS", 3)
    assert resnet.sweep_layers == ["relu", "layer2", "layer4"]  # first, middle, last
    monkeypatch.setattr(session_module, "MAX_SWEEP_LAYERS", 4)
    assert resnet.sweep_layers == ["relu", "layer1", "layer3", "layer4"]


def test_huge_upload_is_decoded_small(shapes: DemoSession, tmp_path: Path) -> None:
    from gradcam.images import MAX_PIXELS

    path = tmp_path / "huge.png"
    Image.new("P", (9000, 9000)).save(path)  # 10 KB on disk, 81 Mpx
    photo = shapes.open(path)
    assert photo.image.size == (1800, 1800)
    assert photo.image.width * photo.image.height <= MAX_PIXELS


def test_long_names_are_refused_and_not_echoed(shapes: DemoSession, tmp_path: Path) -> None:
    from gradcam.errors import GradCAMError

    path = tmp_path / "scene.png"
    Image.new("RGB", (64, 64), "white").save(path)
    with pytest.raises(GradCAMError, match="a class name of 100000 characters: at most 200"):
        shapes.explain(path, "x" * 100_000)
    for layer, method in (("y" * 100_000, None), (None, "z" * 100_000)):
        with pytest.raises(GradCAMError) as info:
            shapes.explain(path, None, layer, method)
        assert len(str(info.value)) < 1000
