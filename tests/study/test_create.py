"""Creating studies: the items of 5.1 and 5.2, reproducibility, real photos, bad input."""

from __future__ import annotations

import doctest
import hashlib
import importlib
from pathlib import Path

import pytest
from helpers.state import assert_unchanged, snapshot

from gradcam.errors import GradCAMError
from gradcam.models import LoadedModel
from gradcam.study import (
    StudyError,
    create_class_discrimination,
    create_trust,
    load_study_model,
    open_study,
    study_images,
)
from gradcam.study.create import CLASS_QUESTION
from gradcam.study.simulate import box_mass
from gradcam.study.store import TRUST_SCALE


def test_class_discrimination_items(cd_study_file: Path, cd_methods: list[str]) -> None:
    store = open_study(cd_study_file)
    items = store.items()
    assert store.kind == "class-discrimination" and store.question == CLASS_QUESTION
    assert [i.method for i in items] == cd_methods * 3
    for item in items:
        assert len(item.choices) == 2 and item.truth in item.choices
        assert set(item.info["boxes"]) == set(item.choices)
    # One category per photo, the same for every method (the paper's image-category pairs).
    for image in {i.image for i in items}:
        assert len({i.truth for i in items if i.image == image}) == 1


def test_same_seed_same_study(
    shapes: LoadedModel, cd_study_file: Path, cd_methods: list[str], tmp_path: Path
) -> None:
    again = create_class_discrimination(
        tmp_path / "again.db", study_images("synthetic", shapes, count=3), shapes, cd_methods
    )
    first = open_study(cd_study_file)
    assert [(i.image, i.truth, i.choices) for i in again.items()] == [
        (i.image, i.truth, i.choices) for i in first.items()
    ]
    assert sorted(p[3] for p in again.pictures()) == sorted(p[3] for p in first.pictures())


def test_study_is_never_overwritten(shapes: LoadedModel, cd_study_file: Path) -> None:
    before = hashlib.sha256(cd_study_file.read_bytes()).hexdigest()
    with pytest.raises(StudyError, match="already exists"):
        create_class_discrimination(
            cd_study_file, study_images("synthetic", shapes, count=1), shapes, ["gradcam"]
        )
    assert hashlib.sha256(cd_study_file.read_bytes()).hexdigest() == before


def test_trust_items(trust_study_file: Path, shapes: LoadedModel) -> None:
    store = open_study(trust_study_file)
    items = store.items()
    assert store.kind == "trust" and 1 <= len(items) <= 4
    for item in items:
        assert item.left_model in ("A", "B")
        assert item.choices == tuple(str(v) for v, _ in TRUST_SCALE)
        # Both models predicted the annotated shape; it is what the item names.
        assert item.truth == shapes.class_names[item.info["class_id"]]
        assert store.picture(item.id, "A") != store.picture(item.id, "B")


def test_left_right_is_balanced(shapes: LoadedModel, noisy_weights: Path, tmp_path: Path) -> None:
    noisy = load_study_model(f"shapes@{noisy_weights}")
    scenes = study_images("synthetic", shapes, count=3, objects=1)
    methods = ["gradcam", "cam", "hirescam", "xgradcam", "layercam", "gradcam++"]
    store = create_trust(tmp_path / "t.db", scenes, shapes, noisy, methods, seed=3)
    sides = [i.left_model for i in store.items()]
    assert len(sides) >= 12 and 0.2 < sides.count("A") / len(sides) < 0.8


def test_models_are_untouched(shapes: LoadedModel, noisy_weights: Path, tmp_path: Path) -> None:
    noisy = load_study_model(f"shapes@{noisy_weights}")
    shapes.module.train()  # a model in training mode stays so, BatchNorm statistics intact
    try:
        before = [snapshot(shapes.module), snapshot(noisy.module)]
        scenes = study_images("synthetic", shapes, count=2, objects=1)
        create_trust(tmp_path / "t.db", scenes, shapes, noisy, ["gradcam", "guided-gradcam"])
        create_class_discrimination(
            tmp_path / "s.db", study_images("synthetic", shapes, count=1), shapes, ["gradcam"]
        )
        assert_unchanged(before[0], shapes.module)
        assert_unchanged(before[1], noisy.module)
    finally:
        shapes.module.eval()


def test_real_photo_gradcam_points_at_its_category(lite0: LoadedModel, tmp_path: Path) -> None:
    photo = study_images("photo", lite0)
    store = create_class_discrimination(
        tmp_path / "photo.db", photo, lite0, ["gradcam"], both_categories=True
    )
    items = store.items()
    assert sorted(i.truth for i in items) == ["cat", "coffee"]
    for item in items:
        other = next(c for c in item.choices if c != item.truth)
        evidence = store.map(item.id, "map")
        assert box_mass(evidence, item.info["boxes"][item.truth]) > box_mass(
            evidence, item.info["boxes"][other]
        )


def test_no_two_category_images(shapes: LoadedModel, lite0: LoadedModel, tmp_path: Path) -> None:
    one_shape = study_images("synthetic", shapes, count=2, objects=1)
    with pytest.raises(StudyError, match="exactly two annotated categories"):
        create_class_discrimination(tmp_path / "x.db", one_shape, shapes, ["gradcam"])
    # The annotated real photos name one object each (with several ImageNet classes).
    with pytest.raises(StudyError, match="exactly two annotated categories"):
        create_class_discrimination(
            tmp_path / "y.db", study_images("photos", lite0), lite0, ["gradcam"]
        )
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "y.db").exists()


def test_bad_methods_models_and_data(shapes: LoadedModel, tmp_path: Path) -> None:
    scenes = study_images("synthetic", shapes, count=1)
    with pytest.raises(GradCAMError, match="no-such-method"):
        create_class_discrimination(tmp_path / "m.db", scenes, shapes, ["no-such-method"])
    with pytest.raises(GradCAMError, match="unknown model"):
        load_study_model("no_such_net")
    with pytest.raises(StudyError, match="random weights"):
        load_study_model("resnet18@random")
    with pytest.raises(StudyError, match="ImageNet"):
        study_images("photo", shapes)
    with pytest.raises(GradCAMError, match=r"no such folder|not an annotated dataset"):
        study_images(str(tmp_path / "nowhere"), shapes)
    lite0 = load_study_model("efficientnet_lite0")
    with pytest.raises(StudyError, match="different classes"):
        create_trust(tmp_path / "t.db", scenes, shapes, lite0, ["gradcam"])
    assert not list(tmp_path.glob("*.db"))


def test_docstring_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the examples write their study files here
    for name in ("gradcam.study", "gradcam.study.create"):
        failed, attempted = doctest.testmod(importlib.import_module(name))[:2]
        assert failed == 0 and attempted > 0, name
