"""Policy authoring and change-safety tools (docs/policy-tools.md).

- `testing` (with `testfile`, `coverage`): run `[[case]]` test files against a policy.
- `lint` (with `lint_rules`): static analysis; engines lint every policy they load.
- `permissions` (with `grants`, `rights`): what a principal or agent may do (`Engine.permissions`).
- `whocan`: the roles, principals and templates that may do an action.
- `diff`: what a policy change gives or takes, per role, template and principal.

Underneath: `model` (the policy resolved as the compiler resolves it), `patterns` (resource
patterns as languages: matching, intersection, exact set questions) and `conditions` (with
`condition_syntax`: constant folding of `when`/`require`).
"""
