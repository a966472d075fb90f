"""Real photos shipped inside installed packages (scikit-image, matplotlib)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import skimage
from PIL import Image

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"

ESPRESSO = 967
CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def photo(name: str) -> Image.Image:
    """A photo from scikit-image's data folder, as RGB."""
    return Image.open(SKIMAGE_DATA / name).convert("RGB")


def cat_and_coffee() -> tuple[Image.Image, int]:
    """Chelsea the cat (left) beside an espresso (right); returns the image and the split x."""
    cat, coffee = photo("chelsea.png"), photo("coffee.png")
    coffee = coffee.resize(
        (round(coffee.width * cat.height / coffee.height), cat.height), Image.Resampling.LANCZOS
    )
    both = Image.new("RGB", (cat.width + coffee.width, cat.height))
    both.paste(cat, (0, 0))
    both.paste(coffee, (cat.width, 0))
    return both, cat.width
