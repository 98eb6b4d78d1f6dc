"""A regression MLP; each batch is fresh noise through a fixed linear target."""

import torch
from torch import nn


def build(batch_size, device):
    weights = torch.linspace(-1.0, 1.0, 32, device=device)
    model = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 1)).to(device)

    def batch():
        x = torch.randn(batch_size, 32, device=device)
        return x, (x @ weights).unsqueeze(-1)

    def loss(model, batch):
        x, y = batch
        return nn.functional.mse_loss(model(x), y)

    return {"model": model, "batch": batch, "loss": loss}
