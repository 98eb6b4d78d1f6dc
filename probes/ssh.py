"""`ssh.connect`: can matrix reach the host? Every task on a remote host needs this first."""

from __future__ import annotations

from typing import Any

from matrix.probe import ProbeContext, ProbeParams, probe


@probe(
    "ssh.connect",
    facts={
        "host": "the target's name as given",
        "via": "ssh, or local for the machine running matrix",
        "connect_seconds": "time to connect and authenticate (0 when already connected)",
        "server_version": "the server's SSH version string",
        "host_key": "SHA256 fingerprint of the server's host key",
        "agent": "tasks run through one helper python over one session (see `agent:`)",
        "agent_problem": "why the helper did not start (tasks then open a session each)",
    },
)
class SshConnect(ProbeParams):
    """Open (or reuse) the SSH connection to the target; on `local` it always passes."""

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        return {"host": ctx.target.name, **await ctx.target.connect()}
