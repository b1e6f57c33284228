//! The approval stage of a decision (a grant in `context.approval`, or a
//! pending approval to remember) and `Engine::approve`.

use super::{
    describe, parse_decision_id, refuse, ApprovalError, Approver, Binding, DecisionKey, GrantKey,
    IssuedGrant, Pending, Refusal, Requester, Use, APPROVAL_KEY, MAX_GRANT_TTL_NS,
};
use crate::charge::Owner;
use crate::cond::Value;
use crate::engine::Engine;
use crate::policy::{ActionId, CompiledPolicy, RuleId};
use crate::reason::Reason;
use crate::request::{Context, RequestEnv};
use crate::rights::ApprovalNeed;

/// How the approval stage treats one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A single check: remember an `approval_required` decision, use up a grant.
    #[default]
    Check,
    /// A batch: use up grants, remember nothing (a batch returns no ids).
    Batch,
    /// `explain`: check a grant without using it, remember nothing.
    Explain,
    /// A candidate policy's shadow decision: like `Explain`, but the grant
    /// the live decision just used up (given here) counts as unused.
    Shadow(Option<GrantKey>),
}

/// What the approval stage made of an `approval_required` verdict.
pub(crate) enum Stage {
    /// No grant came with the request: still `approval_required`, and (single
    /// checks) what to remember once the decision has its id.
    Required(Option<Box<Pending>>),
    /// A grant for this very request: allowed by `rule`; `consumed` is the
    /// grant to give back if a later stage denies.
    Approved {
        rule: Option<RuleId>,
        detail: String,
        consumed: Option<GrantKey>,
    },
    /// A grant that does not pass.
    Refused(Reason, String),
}

/// What a request needs to know about its verdict's approval.
pub(crate) struct Asked<'a> {
    pub(crate) policy: &'a CompiledPolicy,
    pub(crate) need: &'a ApprovalNeed,
    pub(crate) owner: Owner,
    pub(crate) action: ActionId,
    pub(crate) resource: Option<&'a str>,
    pub(crate) context: Option<&'a dyn Context>,
}

impl Engine {
    /// The approval stage of a request whose verdict is `approval_required`
    /// (cold: only such requests get here).
    #[cold]
    pub(crate) fn approval_stage(
        &self,
        asked: &Asked<'_>,
        env: &RequestEnv<'_>,
        now: u64,
        mode: Mode,
    ) -> Stage {
        let token = asked
            .context
            .and_then(|c| c.lookup(APPROVAL_KEY, &asked.policy.context_keys));
        let token = match token {
            None | Some(Value::Null) => {
                let draft = match mode {
                    Mode::Check => self.draft(asked, env).map(Box::new),
                    Mode::Batch | Mode::Explain | Mode::Shadow(_) => None,
                };
                return Stage::Required(draft);
            }
            Some(Value::Str(t)) => t,
            Some(_) => {
                return Stage::Refused(
                    Reason::ApprovalInvalid,
                    "`context.approval` must be the token string of an approval grant".into(),
                )
            }
        };
        let Some(binding) = self.binding(asked) else {
            return Stage::Refused(Reason::InternalError, String::new());
        };
        let how = match mode {
            Mode::Check | Mode::Batch => Use::Consume,
            Mode::Explain => Use::Peek,
            Mode::Shadow(live) => Use::Shadow(live),
        };
        match self.approvals.redeem(token, &binding, now, how) {
            Ok((key, detail)) => Stage::Approved {
                rule: asked.need.granted.or(asked.need.rules.first().copied()),
                detail,
                consumed: (how == Use::Consume).then_some(key),
            },
            Err((reason, why)) => Stage::Refused(reason, why),
        }
    }

    /// The request `asked` as a grant would be bound to it.
    fn binding(&self, asked: &Asked<'_>) -> Option<Binding> {
        let policy = asked.policy;
        let requester = match asked.owner {
            Owner::Agent(slot) => Requester::Agent(self.slots.current_handle(slot)?),
            Owner::Principal(pid) => Requester::Principal(pid),
        };
        let rules: Vec<&crate::policy::Rule> = asked
            .need
            .rules
            .iter()
            .filter_map(|r| policy.rules.get(*r as usize))
            .collect();
        let mut keys: Vec<&str> = rules
            .iter()
            .flat_map(|r| r.when.iter().chain(r.approval.iter().map(|a| &a.condition)))
            .flat_map(|c| c.context_keys().iter().map(|k| &**k))
            .filter(|k| *k != APPROVAL_KEY)
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let context = keys
            .into_iter()
            .map(|k| {
                let v = asked
                    .context
                    .and_then(|c| c.lookup(k, &policy.context_keys))
                    .cloned();
                (Box::from(k), v)
            })
            .collect();
        Some(Binding {
            requester,
            action: policy.actions.get(asked.action as usize)?.clone(),
            resource: asked.resource.map(Box::from),
            rules: rules.iter().map(|r| r.path.clone()).collect(),
            context,
        })
    }

    /// The pending approval a single check's `approval_required` leaves.
    fn draft(&self, asked: &Asked<'_>, env: &RequestEnv<'_>) -> Option<Pending> {
        let binding = self.binding(asked)?;
        let identity = env.identity();
        let requester = identity
            .chain
            .first()
            .or(identity.principal_id.as_ref())
            .map_or("", |s| s.as_str());
        let approvers = asked
            .need
            .rules
            .iter()
            .filter_map(|r| asked.policy.rules.get(*r as usize))
            .filter_map(|r| Some((r.path.clone(), r.approval.as_ref()?.approvers.clone())))
            .collect();
        Some(Pending {
            binding,
            requester: requester.into(),
            chain: identity.chain.iter().map(|s| s.as_str().into()).collect(),
            approvers,
            created_ns: 0,
            expires_ns: 0,
            approved: false,
        })
    }

    /// Approve the `approval_required` decision `decision_id` as principal
    /// `approver`: a one-time grant for that exact request, valid for
    /// `ttl_ns` (at most [`MAX_GRANT_TTL_NS`]), whose token is made of
    /// `entropy` (16 bytes from a cryptographic source). The approver must
    /// hold a role the entry names or be named there, and must not be the
    /// requester or anyone in its delegation chain. Recorded as an
    /// `approval_granted` event when auditing is on.
    pub fn approve(
        &self,
        decision_id: &str,
        approver: &str,
        ttl_ns: u64,
        entropy: [u8; 16],
    ) -> Result<IssuedGrant, ApprovalError> {
        if ttl_ns == 0 || ttl_ns > MAX_GRANT_TTL_NS {
            return refuse(
                Refusal::InvalidArgument,
                format!(
                    "ttl must be positive and at most {}s",
                    MAX_GRANT_TTL_NS / 1_000_000_000
                ),
            );
        }
        let Some(key) = parse_decision_id(decision_id) else {
            return refuse(
                Refusal::InvalidArgument,
                format!("`{decision_id}` is not a decision id (STREAM-SEQ, e.g. `0a1b2c3d-42`)"),
            );
        };
        let now = self.now_ns();
        let pending = self.approvals.pending(key, now)?;
        self.check_approver(&pending, approver)?;
        let grant = self
            .approvals
            .issue(key, approver, (now, ttl_ns), entropy)?;
        self.emit("approval_granted", || {
            let fields = serde_json::json!({
                "decision_id": &grant.decision_id,
                "approver": approver,
                "expires_at": grant.expires_at_ns,
                "requester": &grant.requester,
                "action": &*grant.binding.action,
                "resource": grant.binding.resource.as_deref(),
                "rule": grant.binding.rules.first().map(|r| &**r),
            })
            .to_string();
            // The inside of the object: the event's own keys come first.
            fields
                .strip_prefix('{')
                .and_then(|f| f.strip_suffix('}'))
                .unwrap_or_default()
                .to_string()
        });
        Ok(grant)
    }

    /// Whether principal `approver` may approve `p`.
    fn check_approver(&self, p: &Pending, approver: &str) -> Result<(), ApprovalError> {
        if self.index.read().find(approver).is_some() {
            return refuse(
                Refusal::UnknownApprover,
                format!("`{approver}` is an agent; only principals approve"),
            );
        }
        let snap = self.snapshot();
        let Some(principal) = snap.principals.get(approver) else {
            return refuse(
                Refusal::UnknownApprover,
                format!("no principal `{approver}`"),
            );
        };
        if p.chain.iter().any(|c| **c == *approver) {
            let msg = if *p.requester == *approver {
                format!("`{approver}` cannot approve its own request")
            } else {
                format!(
                    "`{approver}` cannot approve a request of `{}`, which acts on its behalf",
                    p.requester
                )
            };
            return refuse(Refusal::FourEyes, msg);
        }
        if snap.suspended.contains(approver) {
            return refuse(Refusal::NotAnApprover, format!("`{approver}` is suspended"));
        }
        let policy = &snap.policy;
        let held: Vec<&str> = principal
            .roles
            .iter()
            .filter_map(|r| policy.roles.get(*r as usize))
            .flat_map(|r| r.closure.iter())
            .filter_map(|r| policy.roles.get(*r as usize))
            .map(|r| &*r.name)
            .collect();
        for (rule, approvers) in p.approvers.iter() {
            let qualifies = approvers.iter().any(|a| match a {
                Approver::Role(r) => held.contains(&&**r),
                Approver::Principal(id) => **id == *approver,
            });
            if !qualifies {
                return refuse(
                    Refusal::NotAnApprover,
                    format!(
                        "`{approver}` may not approve `{rule}`: approval is needed from {}",
                        describe(approvers)
                    ),
                );
            }
        }
        Ok(())
    }

    /// Every pending approval that can still be approved, oldest first.
    pub fn pending_approvals(&self) -> Vec<(DecisionKey, Pending)> {
        self.approvals.list(self.now_ns())
    }
}
