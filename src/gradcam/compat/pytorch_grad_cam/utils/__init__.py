"""pytorch-grad-cam's ``pytorch_grad_cam.utils``: targets, images and reshapes."""

from gradcam.compat.pytorch_grad_cam.utils import image, model_targets, reshape_transforms

__all__ = ["image", "model_targets", "reshape_transforms"]
