"""Explanation methods, each small and built on :mod:`gradcam.engine`."""

from gradcam.methods.gradcam import CAMResult, GradCAM, grad_cam_from_gradients

__all__ = ["CAMResult", "GradCAM", "grad_cam_from_gradients"]
