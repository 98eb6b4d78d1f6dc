"""An MLP that learns, with per-step work that grows: every step logs its loss into a
history it then scans whole (a running mean recomputed from scratch), so step N costs N."""

import torch
from torch import nn

history = []


def build(batch_size, device):
    weights = torch.linspace(-1.0, 1.0, 32, device=device)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1)).to(device)

    def batch():
        x = torch.randn(batch_size, 32, device=device)
        return x, (x @ weights).unsqueeze(-1)

    def loss(model, batch):
        x, y = batch
        value = nn.functional.mse_loss(model(x), y)
        history.extend([float(value.detach())] * 3000)
        sum(history) / len(history)  # the running mean, recomputed over everything each step
        return value

    return {"model": model, "batch": batch, "loss": loss}
