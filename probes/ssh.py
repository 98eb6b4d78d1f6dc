"""`ssh.connect`: can matrix reach the host? Every task on an SSH host needs this first."""

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
        connect = getattr(ctx.target, "connect", None)
        if connect is None:
            return {"host": ctx.target.name, "via": "local"}
        connection = await connect()
        key = connection.get_server_host_key()
        return {
            "host": ctx.target.name,
            "via": "ssh",
            "connect_seconds": round(getattr(ctx.target, "connect_seconds", 0.0), 4),
            "server_version": connection.get_extra_info("server_version"),
            "host_key": key.get_fingerprint() if key is not None else None,
            "agent": getattr(ctx.target, "uses_agent", False),
            "agent_problem": getattr(ctx.target, "agent_problem", None),
        }
