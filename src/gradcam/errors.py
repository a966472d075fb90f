"""The exceptions a user of gradcam can meet: each names what was wrong with the input."""

from __future__ import annotations

__all__ = [
    "GradCAMError",
    "ImageLoadError",
    "LayerError",
    "MediaLoadError",
    "ModelLoadError",
    "TargetError",
]


class GradCAMError(ValueError):
    """Base class of every error caused by a user's input (model, layer, image or target).

    The CLI prints these as one line, without a traceback.
    """


class LayerError(GradCAMError):
    """The chosen layer cannot be explained: unknown name, runs twice, never runs, not spatial."""


class TargetError(GradCAMError):
    """The targets cannot be resolved against the model output (bad id, shape or type)."""


class ImageLoadError(GradCAMError):
    """A file could not be read as an image (missing, corrupt, not an image, too large)."""


class ModelLoadError(GradCAMError):
    """A model could not be built or its weights could not be loaded."""


class MediaLoadError(GradCAMError):
    """A video, volume or signal file could not be read: missing, corrupt, truncated, a wrong
    header, NaN values, or over a cap on frames, pixels or voxels (see :mod:`gradcam.media`)."""
