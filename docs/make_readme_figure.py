"""Regenerate docs/cat_and_coffee.jpg, the README's picture: `.venv/bin/python docs/make_readme_figure.py`."""

from pathlib import Path

from PIL import Image, ImageDraw

import gradcam

HERE = Path(__file__).parent
PHOTO = HERE.parent / "src" / "gradcam" / "data" / "cat_and_coffee.jpg"

model = gradcam.load_model()
photo = gradcam.load_image(PHOTO)
x = model.preprocess(photo)
espresso, cat = model.class_index("espresso"), model.class_index("Egyptian cat")
maps = gradcam.GradCAM(model.module)(x, [espresso, cat]).raw[0]
counter = gradcam.GradCAM(model.module, counterfactual=True)(x, [cat]).raw[0]
panels = [
    ("Grad-CAM: espresso", maps[0]),
    ("Grad-CAM: Egyptian cat", maps[1]),
    ("Counterfactual: Egyptian cat", counter[0]),
]
figure = Image.new("RGB", (photo.width, photo.height * len(panels)), "white")
for row, (title, raw) in enumerate(panels):
    full = gradcam.upsample(raw, (photo.height, photo.width))
    tile = gradcam.overlay(photo, raw, box=gradcam.bounding_box(full))
    ImageDraw.Draw(tile).text((8, 6), title, fill="white")
    figure.paste(tile, (0, row * photo.height))
figure.save(HERE / "cat_and_coffee.jpg", quality=85)
print(f"wrote {HERE / 'cat_and_coffee.jpg'}")
