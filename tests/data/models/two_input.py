"""A model of two inputs, an image-like tensor and a vector, called as model(image, meta);
its batch a dict, fresh each call."""

import torch
from torch import nn


class TwoInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.meta = nn.Linear(6, 16)
        self.head = nn.Linear(8 * 16 + 16, 1)

    def forward(self, image, meta):
        features = torch.cat([self.conv(image).flatten(1), torch.relu(self.meta(meta))], dim=1)
        return self.head(features).squeeze(-1)


def build(batch_size, device):
    model = TwoInput().to(device)

    def batch():
        image = torch.randn(batch_size, 1, 8, 8, device=device)
        meta = torch.randn(batch_size, 6, device=device)
        return {"image": image, "meta": meta, "y": image.mean(dim=(1, 2, 3)) * 4 + meta[:, 0]}

    def loss(model, batch):
        return nn.functional.mse_loss(model(batch["image"], batch["meta"]), batch["y"])

    def inputs(batch):
        return {"image": batch["image"], "meta": batch["meta"]}

    return {"model": model, "batch": batch, "loss": loss, "inputs": inputs}
