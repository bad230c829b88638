"""Only ``torchvision.transforms``, for TorchServe's stock image_classifier (README.md)."""
