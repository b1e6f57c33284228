"""`Explanation`: a decision's derivation as data and as text a person can read."""

from __future__ import annotations

from typing import Any


class Explanation:
    """What `Engine.explain` returns: `.decision`, `.data` (the whole structure), and `str()` as text."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.decision: dict[str, Any] = data["decision"]

    @property
    def allowed(self) -> bool:
        return bool(self.decision["allowed"])

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def __repr__(self) -> str:
        return f"Explanation({self.decision!r})"

    def __str__(self) -> str:
        d, data = self.decision, self.data
        subject = data.get("subject") or {}
        who = subject.get("id") or "(unknown subject)"
        on = f" on {data['resource']}" if data.get("resource") else ""
        verdict = "ALLOW" if d["allowed"] else "DENY"
        rule = f", rule {d['rule']}" if d.get("rule") else ""
        lines = [
            f"{verdict} {data.get('action')}{on} for {who}",
            f"  reason: {d['reason']}{rule} (policy {d['policy_version']})",
            f"  {d['why']}",
        ]
        if d.get("detail"):
            lines.append(f"  detail: {d['detail']}")
        chain = data.get("chain") or []
        if chain:
            lines.append("  chain, the subject first; every level must allow:")
        for i, level in enumerate(chain, 1):
            template = f" (template {level['template']})" if level.get("template") else ""
            roles = ", ".join(level.get("roles") or []) or "none"
            outcome = level.get("outcome", "?")
            by = f" by {level['rule']}" if level.get("rule") else ""
            lines.append(f"  {i}. {level['kind']} {level['id']}{template}; roles: {roles} -> {outcome}{by}")
            for e in level.get("entries") or []:
                scope = f" on {', '.join(e['on'])}" if e.get("on") else ""
                if e["matched"]:
                    mark = "matched"
                elif data.get("resource") is None:
                    mark = "not applicable (the request names no resource)"
                else:
                    mark = "resource did not match"
                lines.append(f"       {e['effect']:5} {e['rule']}{scope}: {mark}")
                if e.get("when") is not None:
                    outcome = e.get("condition") or "not evaluated"
                    lines.append(f"             when {e['when']} -> {outcome}")
                    failure = e.get("failure")
                    if failure:
                        lines.append(f"             {failure['message']}")
        guards = data.get("guards") or []
        if guards:
            lines.append("  guards on this action (checked once every level allows):")
        for g in guards:
            scope = f" on {', '.join(g['on'])}" if g.get("on") else ""
            outcome = g.get("condition") or "not applicable"
            lines.append(f"     {g['rule']}{scope}: require {g['require']} -> {outcome}")
            if g.get("failure"):
                lines.append(f"       {g['failure']['message']}")
        return "\n".join(lines)
