"""A small MLP for the torch.* probes' `entrypoint`, in the most common supervised shape: each
batch is `(x, y)` and the loss is the model's own.

    matrix run specs/training-readiness.yaml --var entrypoint=torch_model.regressor:build \
        --var model_src=examples

`build(batch_size, device)` returns the model on `device`, `batch()` giving one `(x, y)` batch,
and `loss(model, batch)`. The model is called as `model(x)`: for inference and export the probes
take `x` from an `(x, y)` batch when a `loss` is given (or say so with `inputs`). The data is
one batch drawn when the model is built, its targets a fixed linear function of the input: the
smoke-test convention (a model that cannot fit one batch has a bug), so the loss falls within
a few steps at any batch size. Dropout makes training depend on the RNG.
"""

from __future__ import annotations

import torch
from torch import nn

FEATURES = 16


class Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Dropout(0.1))
        self.out = nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x)).squeeze(-1)


def build(batch_size: int, device: torch.device) -> dict:
    model = Regressor().to(device)
    weights = torch.linspace(-1.0, 1.0, FEATURES, device=device)

    x = torch.randn(batch_size, FEATURES, device=device)
    y = x @ weights

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(model(x), y)

    return {"model": model, "batch": batch, "loss": loss}
