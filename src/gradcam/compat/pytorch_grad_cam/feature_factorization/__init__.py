"""pytorch-grad-cam's ``pytorch_grad_cam.feature_factorization``."""
