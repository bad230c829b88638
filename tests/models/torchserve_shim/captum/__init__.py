"""Only ``captum.attr.IntegratedGradients``, which the stock vision handler builds (README.md)."""
