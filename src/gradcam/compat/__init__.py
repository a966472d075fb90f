"""Compatible interfaces of other explanation libraries, on gradcam's engine and methods.

:mod:`gradcam.compat.pytorch_grad_cam` mirrors pytorch-grad-cam 1.5.7: change the import prefix
and its code runs as written.
"""
