"""pytorch-grad-cam 1.5.7's ``pytorch_grad_cam.metrics``, computed by
:mod:`gradcam.evaluate.confidence`.

Each metric is called as pytorch-grad-cam's, ``metric(input_tensor, cams, targets, model)``
with (B, H, W) numpy maps and one target callable per image (called on that image's model
output), and returns a (B,) float32 numpy array.
"""
