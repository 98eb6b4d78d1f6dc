"""The built-in probe kinds and the module that declares each. The registry imports a
family's module only when a spec uses one of its kinds (or something lists them all), so
`matrix validate` pays for the probes it checks, not for every one there is. A new family is
one module in probes/ and its kinds here; a test keeps this index true to the modules."""

from __future__ import annotations

KINDS = {
    "alert.content": "probes.alert",
    "aws.ec2": "probes.aws",
    "aws.identity": "probes.aws",
    "aws.s3": "probes.aws",
    "command": "probes.command",
    "script": "probes.command",
    "data.files": "probes.data",
    "data.jsonl": "probes.data",
    "torch.distributed": "probes.distributed",
    "dir": "probes.files",
    "disk": "probes.files",
    "file": "probes.files",
    "gpu.health": "probes.gpu",
    "env": "probes.host",
    "memory": "probes.host",
    "model.files": "probes.model",
    "http": "probes.net",
    "http.load": "probes.net",
    "http.trace": "probes.net",
    "net.bandwidth": "probes.net",
    "port": "probes.net",
    "notify.webhook": "probes.notify",
    "prometheus.alert": "probes.prometheus",
    "prometheus.metrics": "probes.prometheus",
    "prometheus.query": "probes.prometheus",
    "python": "probes.pyenv",
    "slurm.connect": "probes.slurm",
    "ssh.connect": "probes.ssh",
    "torch.batch_size": "probes.training",
    "torch.checkpoint": "probes.training",
    "torch.env": "probes.training",
    "torch.export": "probes.training",
    "torch.inference": "probes.training",
    "torch.lr": "probes.training",
    "torch.memory": "probes.training",
    "torch.soak": "probes.training",
    "torch.train": "probes.training",
}
