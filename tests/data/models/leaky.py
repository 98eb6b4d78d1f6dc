"""An MLP that learns, but keeps each step's predictions with their autograd graph in a
module-level history (`history.append(prediction)` instead of `.item()`): memory grows every
step until the run dies."""

import torch
from torch import nn

history = []


def build(batch_size, device):
    weights = torch.linspace(-1.0, 1.0, 32, device=device)
    model = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 1)).to(device)

    def batch():
        x = torch.randn(batch_size, 32, device=device)
        return x, (x @ weights).unsqueeze(-1)

    def loss(model, batch):
        x, y = batch
        prediction = model(x)
        history.append(prediction.repeat(1, 32768))  # ~1 MiB a step at batch 8, graph and all
        return nn.functional.mse_loss(prediction, y)

    return {"model": model, "batch": batch, "loss": loss}
