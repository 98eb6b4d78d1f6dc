"""A minimal model for the torch.* probes' `entrypoint`.

    probe: {kind: torch.train, entrypoint: "torch_model.regressor:build", path: examples}

`build(batch_size, device)` returns the model on `device`, `batch()` giving one batch of model
input, and `loss(model, batch)`. The targets are a fixed linear function of the input, so the
loss really falls; dropout and fresh random inputs each step make training depend on the RNG.
"""

from __future__ import annotations

import torch
from torch import nn

FEATURES = 16


def build(batch_size: int, device: torch.device) -> dict:
    layers = [nn.Linear(FEATURES, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 1)]
    model = nn.Sequential(*layers).to(device)
    weights = torch.linspace(-1.0, 1.0, FEATURES, device=device)

    def batch() -> torch.Tensor:
        return torch.randn(batch_size, FEATURES, device=device)

    def loss(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(model(inputs).squeeze(-1), inputs @ weights)

    return {"model": model, "batch": batch, "loss": loss}
