"""The decision server and its clients: Charter over a Unix socket for agents in other processes.

`Client` / `AsyncClient` talk to the decision socket, `AdminClient` /
`AsyncAdminClient` to the admin socket; `charter serve` runs the server
(`charter.server.server.run`). The wire protocol is in `protocol.py` and
docs/protocol.md; operating the server is docs/server.md.
"""

from charter.server.async_client import AsyncAdminClient, AsyncClient
from charter.server.client import (
    AdminClient,
    AgentInfo,
    Client,
    RemoteDecision,
    RemoteError,
    RemoteLease,
    ServerTimeout,
)
from charter.server.client_ops import AsyncRemoteLease

__all__ = [
    "AdminClient",
    "AgentInfo",
    "AsyncAdminClient",
    "AsyncClient",
    "AsyncRemoteLease",
    "Client",
    "RemoteDecision",
    "RemoteError",
    "RemoteLease",
    "ServerTimeout",
]
