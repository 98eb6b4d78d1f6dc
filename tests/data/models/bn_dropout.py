"""A classifier with BatchNorm and Dropout; each batch is fresh points, labelled by a fixed
rule."""

import torch
from torch import nn


def build(batch_size, device):
    model = nn.Sequential(
        nn.Linear(20, 64),
        nn.BatchNorm1d(64),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(64, 64),
        nn.BatchNorm1d(64),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(64, 4),
    ).to(device)
    centres = torch.randn(4, 20, generator=torch.Generator().manual_seed(1)).to(device)

    def batch():
        x = torch.randn(max(batch_size, 2), 20, device=device)
        return x, torch.cdist(x, centres).argmin(dim=1)

    def loss(model, batch):
        x, y = batch
        return nn.functional.cross_entropy(model(x), y)

    return {"model": model, "batch": batch, "loss": loss}
