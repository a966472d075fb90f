"""Regenerate the README's pictures: `.venv/bin/python docs/make_readme_figure.py`.

docs/cat_and_coffee.jpg: Grad-CAM and counterfactual overlays with localization boxes.
docs/fig1_cat_and_coffee.jpg: the paper's Fig. 1 on our photo, for both classes.
"""

from pathlib import Path

from PIL import Image, ImageDraw

import gradcam
from gradcam.viz import gradient_image, side_by_side

HERE = Path(__file__).parent
PHOTO = HERE.parent / "src" / "gradcam" / "data" / "cat_and_coffee.jpg"

model = gradcam.load_model()
photo = gradcam.load_image(PHOTO)
x = model.preprocess(photo)
espresso, cat = model.class_index("espresso"), model.class_index("Egyptian cat")

# One forward pass gives Grad-CAM, Guided Backprop and Guided Grad-CAM for both classes.
guided = gradcam.GuidedGradCAM(model.module)(x, [espresso, cat])
counter = gradcam.GradCAM(model.module, counterfactual=True)(x, [cat]).raw[0]
panels = [
    ("Grad-CAM: espresso", guided.cam.raw[0, 0]),
    ("Grad-CAM: Egyptian cat", guided.cam.raw[0, 1]),
    ("Counterfactual: Egyptian cat", counter[0]),
]
figure = Image.new("RGB", (photo.width, photo.height * len(panels)), "white")
for row, (title, raw) in enumerate(panels):
    full = gradcam.upsample(raw, (photo.height, photo.width))
    tile = gradcam.overlay(photo, raw, box=gradcam.bounding_box(full))
    ImageDraw.Draw(tile).text((8, 6), title, fill="white")
    figure.paste(tile, (0, row * photo.height))
figure.save(HERE / "cat_and_coffee.jpg", quality=85)

rows = []
for k, name in enumerate(["espresso", "Egyptian cat"]):
    rows.append(
        side_by_side(
            [
                ("Original", photo),
                (f"Guided Backprop: {name}", gradient_image(guided.gradients[0, k], photo.size)),
                (f"Grad-CAM: {name}", gradcam.overlay(photo, guided.cam.raw[0, k])),
                (f"Guided Grad-CAM: {name}", gradient_image(guided.maps[0, k], photo.size)),
            ],
            height=160,
        )
    )
fig1 = Image.new("RGB", (rows[0].width, sum(r.height for r in rows)), "white")
for row, picture in enumerate(rows):
    fig1.paste(picture, (0, row * rows[0].height))
fig1.save(HERE / "fig1_cat_and_coffee.jpg", quality=88)
print(f"wrote {HERE / 'cat_and_coffee.jpg'} and {HERE / 'fig1_cat_and_coffee.jpg'}")
