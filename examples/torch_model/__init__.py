"""An example user model for the torch.* probes (docs/torch-probes.md): see regressor.py."""
