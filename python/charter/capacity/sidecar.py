"""The decision server as `charter bench` runs it: `charter serve` with the bench's hooks and audit.

Run as `python -m charter.capacity.sidecar --policy P --socket S --admin-socket A
[--audit-dir D] [--workers N]`. It is the real server (`charter.server.server.run`);
only the engine factory differs: it registers the hooks generated policies
name, and turns on the audit trail when asked and when the engine has one.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import msgspec

from charter import policy as policy_doc
from charter.capacity import audit
from charter.capacity.hooks import hooks_named
from charter.engine import Engine
from charter.server.server import ServerConfig, main_logging, run


def engine_factory(audit_dir: str | None) -> object:
    def build(doc: policy_doc.Policy) -> Engine:
        data = msgspec.to_builtins(doc)
        engine = Engine.from_dict(data, hooks=hooks_named(data))
        if audit_dir is not None:
            audit.enable(engine, os.path.join(audit_dir, f"worker-{os.getpid()}"))
        return engine

    return build


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m charter.capacity.sidecar")
    parser.add_argument("--policy", required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--admin-socket", required=True)
    parser.add_argument("--audit-dir")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    main_logging("charter bench server")
    config = ServerConfig(
        policy=args.policy,
        socket=args.socket,
        admin_socket=args.admin_socket,
        workers=args.workers,
        trusted_uids=(os.geteuid(),),  # the load generator names agents by handle, as a gateway would
        engine_factory=engine_factory(args.audit_dir),  # type: ignore[arg-type]
    )
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
