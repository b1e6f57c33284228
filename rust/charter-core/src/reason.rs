//! Reason codes: why a decision came out as it did. The numeric codes are
//! part of the batch API (an array of `u8`), so they are only ever appended.

/// Why a decision was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    /// An allow matched and nothing denied.
    Granted = 0,
    /// A deny entry of the subject's own roles matched.
    DeniedByRule = 1,
    /// No allow entry of the subject's own roles matched.
    NoGrant = 2,
    /// The subject's own roles allow it, but a delegator up the chain may not.
    DelegatorDenied = 3,
    /// The action is not declared in the policy.
    UnknownAction = 4,
    /// No principal or agent by that id.
    UnknownPrincipal = 5,
    /// The handle does not refer to a live agent (never issued, or its slot was reused).
    UnknownAgent = 6,
    /// The agent's lifetime (or its delegator's) is over.
    Expired = 7,
    /// The agent was deprovisioned.
    Revoked = 8,
    /// A delegator up the chain was deprovisioned.
    DelegatorRevoked = 9,
    /// The principal the agent acts for was removed.
    PrincipalRemoved = 10,
    /// The agent's template (or a delegator's) is not in the current policy.
    UnknownTemplate = 11,
    /// The agent sits deeper in its chain than a template on it allows.
    DelegationTooDeep = 12,
    /// The resource name is empty, has an empty segment or is too long.
    InvalidResource = 13,
    /// Something inside the engine failed; denied rather than trusted.
    InternalError = 14,
    /// The request itself is malformed (a principal, action or resource of the wrong type).
    MalformedRequest = 15,
    /// The action is outside the agent's scope (or a delegator's), as its credential limits it.
    OutOfScope = 16,
    /// A rate (or a per-action limit) of the agent, a delegator or the principal is used up.
    RateLimited = 17,
    /// A cost budget of the agent, a delegator or the principal is used up.
    BudgetExhausted = 18,
    /// The agent (or a delegator, or the principal) holds `max_in_flight` requests already.
    ConcurrencyLimit = 19,
    /// The agent, a delegator or the principal is suspended (by an operator or its breaker).
    Suspended = 20,
    /// The engine is frozen: the kill switch denies everything.
    Frozen = 21,
    /// An allow entry's `when` condition was false or could not be evaluated,
    /// and no other allow entry granted the request.
    ConditionFailed = 22,
    /// Every role allowed it, but a policy-wide guard's `require` did not hold.
    GuardFailed = 23,
    /// A Python hook refused the request.
    HookDenied = 24,
    /// A Python hook raised, returned something that is not a bool, or is not registered.
    HookError = 25,
    /// Auditing is on in strict mode and the record could not be kept (the
    /// buffer stayed full, or the log cannot be written): never allow unrecorded.
    AuditUnavailable = 26,
    /// An allow entry would grant it, but its `approval` condition holds (or
    /// cannot be evaluated): someone the entry names must approve it first
    /// (`Engine::approve`), and the request be repeated with the grant.
    ApprovalRequired = 27,
    /// The approval grant presented is for another request (agent, action,
    /// resource, entry or a context value the entry reads differs).
    ApprovalMismatch = 28,
    /// The approval grant presented is past its expiry.
    ApprovalExpired = 29,
    /// The approval grant presented was already used: a grant allows one request.
    ApprovalReplayed = 30,
    /// `context.approval` is not a grant this engine issued (unknown, or not a token string).
    ApprovalInvalid = 31,
    /// A quota is shared by a fleet (docs/multi-host.md) and this server's
    /// lease of it is used up: Redis did not grant it more in time (or is away).
    QuotaUnavailable = 32,
}

/// Every reason, indexed by its code.
pub const ALL_REASONS: [Reason; 33] = [
    Reason::Granted,
    Reason::DeniedByRule,
    Reason::NoGrant,
    Reason::DelegatorDenied,
    Reason::UnknownAction,
    Reason::UnknownPrincipal,
    Reason::UnknownAgent,
    Reason::Expired,
    Reason::Revoked,
    Reason::DelegatorRevoked,
    Reason::PrincipalRemoved,
    Reason::UnknownTemplate,
    Reason::DelegationTooDeep,
    Reason::InvalidResource,
    Reason::InternalError,
    Reason::MalformedRequest,
    Reason::OutOfScope,
    Reason::RateLimited,
    Reason::BudgetExhausted,
    Reason::ConcurrencyLimit,
    Reason::Suspended,
    Reason::Frozen,
    Reason::ConditionFailed,
    Reason::GuardFailed,
    Reason::HookDenied,
    Reason::HookError,
    Reason::AuditUnavailable,
    Reason::ApprovalRequired,
    Reason::ApprovalMismatch,
    Reason::ApprovalExpired,
    Reason::ApprovalReplayed,
    Reason::ApprovalInvalid,
    Reason::QuotaUnavailable,
];

impl Reason {
    /// The stable code, as used in logs and the Python API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Granted => "granted",
            Reason::DeniedByRule => "denied_by_rule",
            Reason::NoGrant => "no_grant",
            Reason::DelegatorDenied => "delegator_denied",
            Reason::UnknownAction => "unknown_action",
            Reason::UnknownPrincipal => "unknown_principal",
            Reason::UnknownAgent => "unknown_agent",
            Reason::Expired => "expired",
            Reason::Revoked => "revoked",
            Reason::DelegatorRevoked => "delegator_revoked",
            Reason::PrincipalRemoved => "principal_removed",
            Reason::UnknownTemplate => "unknown_template",
            Reason::DelegationTooDeep => "delegation_too_deep",
            Reason::InvalidResource => "invalid_resource",
            Reason::InternalError => "internal_error",
            Reason::MalformedRequest => "malformed_request",
            Reason::OutOfScope => "out_of_scope",
            Reason::RateLimited => "rate_limited",
            Reason::BudgetExhausted => "budget_exhausted",
            Reason::ConcurrencyLimit => "concurrency_limit",
            Reason::Suspended => "suspended",
            Reason::Frozen => "frozen",
            Reason::ConditionFailed => "condition_failed",
            Reason::GuardFailed => "guard_failed",
            Reason::HookDenied => "hook_denied",
            Reason::HookError => "hook_error",
            Reason::AuditUnavailable => "audit_unavailable",
            Reason::ApprovalRequired => "approval_required",
            Reason::ApprovalMismatch => "approval_mismatch",
            Reason::ApprovalExpired => "approval_expired",
            Reason::ApprovalReplayed => "approval_replayed",
            Reason::ApprovalInvalid => "approval_invalid",
            Reason::QuotaUnavailable => "quota_unavailable",
        }
    }

    /// A sentence for people reading a log or an error.
    pub const fn describe(self) -> &'static str {
        match self {
            Reason::Granted => "an allow entry matched and no deny entry did",
            Reason::DeniedByRule => "a deny entry of the subject's roles matched",
            Reason::NoGrant => "no allow entry of the subject's roles matched",
            Reason::DelegatorDenied => {
                "the subject's roles allow it but a delegator up the chain is not allowed it"
            }
            Reason::UnknownAction => "the action is not declared in the policy",
            Reason::UnknownPrincipal => "no principal or agent has that id",
            Reason::UnknownAgent => "the handle does not refer to a live agent",
            Reason::Expired => "the agent's lifetime is over",
            Reason::Revoked => "the agent was deprovisioned",
            Reason::DelegatorRevoked => "a delegator up the chain was deprovisioned",
            Reason::PrincipalRemoved => "the principal the agent acts for was removed",
            Reason::UnknownTemplate => "the agent's template is not in the current policy",
            Reason::DelegationTooDeep => {
                "the agent is deeper in its delegation chain than its templates allow"
            }
            Reason::InvalidResource => {
                "the resource name is empty, has an empty segment or is too long"
            }
            Reason::InternalError => {
                "the engine failed internally and denied rather than trust the result"
            }
            Reason::OutOfScope => {
                "the action is outside the scope the agent (or a delegator) was given"
            }
            Reason::RateLimited => {
                "a rate limit of the agent, a delegator or the principal is used up"
            }
            Reason::BudgetExhausted => {
                "a cost budget of the agent, a delegator or the principal is used up"
            }
            Reason::ConcurrencyLimit => {
                "too many requests of the agent, a delegator or the principal are in flight"
            }
            Reason::Suspended => "the agent, a delegator or the principal is suspended",
            Reason::Frozen => "the engine is frozen (kill switch): every request is denied",
            Reason::ConditionFailed => {
                "an allow entry matched but its `when` condition was false or could not be evaluated"
            }
            Reason::GuardFailed => "a policy-wide guard on the resource or action did not hold",
            Reason::HookDenied => "a policy hook refused the request",
            Reason::HookError => {
                "a policy hook failed (raised, returned a non-bool, or is not registered)"
            }
            Reason::MalformedRequest => {
                "the request is malformed (a principal, action or resource of the wrong type)"
            }
            Reason::AuditUnavailable => {
                "auditing is strict and the decision could not be recorded, so it was denied"
            }
            Reason::ApprovalRequired => {
                "an allow entry grants it only with approval, and its `approval` condition holds"
            }
            Reason::ApprovalMismatch => "the approval grant presented is for another request",
            Reason::ApprovalExpired => "the approval grant presented has expired",
            Reason::ApprovalReplayed => {
                "the approval grant presented was already used (a grant allows one request)"
            }
            Reason::ApprovalInvalid => "the approval grant presented is unknown or malformed",
            Reason::QuotaUnavailable => {
                "the fleet-wide quota could not be leased from the shared state (used up, or Redis is away)"
            }
        }
    }

    /// The numeric code.
    #[inline(always)]
    pub const fn code(self) -> u8 {
        self as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_index_the_table() {
        for (i, r) in ALL_REASONS.iter().enumerate() {
            assert_eq!(r.code() as usize, i);
            assert!(!r.as_str().is_empty());
        }
    }
}
