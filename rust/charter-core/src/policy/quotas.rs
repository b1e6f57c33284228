//! Compiling the policy's `quotas` and `costs` into the parameters the
//! quota primitives (`crate::quota`) take.

use super::compile::{key, ActionId, CompiledPolicy};
use super::model::{BreakerSpec, QuotaSpec};
use crate::bitset::ActionSet;
use crate::error::{Error, Result};
use crate::quota::{parse_cost, BreakerConfig, GcraParams, Rate};
use std::collections::BTreeMap;

/// Most per-action `limits` one quota may have (each costs 8 bytes per agent).
pub const MAX_LIMITS: usize = 4;

/// Index of a quota in [`CompiledPolicy::quotas`].
pub type QuotaId = u16;

/// One per-action-class limit of a quota.
#[derive(Debug, Clone)]
pub struct Limit {
    /// The action pattern as written (`payments:*`).
    pub pattern: Box<str>,
    /// The actions it counts.
    pub actions: ActionSet,
    /// Its rate.
    pub params: GcraParams,
}

/// A compiled quota.
#[derive(Debug, Clone)]
pub struct Quota {
    /// Its name.
    pub name: Box<str>,
    /// Requests per period.
    pub rate: Option<GcraParams>,
    /// Cost units per period.
    pub budget: Option<GcraParams>,
    /// Requests held at once through `acquire`.
    pub max_in_flight: Option<u32>,
    /// Per-action-class rates (at most [`MAX_LIMITS`]).
    pub limits: Box<[Limit]>,
}

impl CompiledPolicy {
    pub(super) fn compile_quota(&self, name: &str, q: &QuotaSpec, path: &str) -> Result<Quota> {
        let rate = q
            .rate
            .as_deref()
            .map(|r| {
                Rate::parse(r, &format!("{path}.rate"))?.params(q.burst, &format!("{path}.burst"))
            })
            .transpose()?;
        if q.burst.is_some() && rate.is_none() {
            return Err(Error::policy(
                format!("{path}.burst"),
                "`burst` applies to `rate`, which is missing",
            ));
        }
        let budget = q
            .budget
            .as_deref()
            .map(|b| {
                Rate::parse(b, &format!("{path}.budget"))?.params(None, &format!("{path}.budget"))
            })
            .transpose()?;
        if q.limits.len() > MAX_LIMITS {
            return Err(Error::policy(
                format!("{path}.limits"),
                format!(
                    "a quota may have at most {MAX_LIMITS} limits, found {}",
                    q.limits.len()
                ),
            ));
        }
        let mut limits = Vec::new();
        for (pattern, r) in &q.limits {
            let lpath = format!("{path}.limits.{}", key(pattern));
            let mut actions = ActionSet::empty(self.action_count());
            self.expand_action_at(pattern, &lpath, &mut actions)?;
            limits.push(Limit {
                pattern: pattern.as_str().into(),
                actions,
                params: Rate::parse(r, &lpath)?.params(None, &lpath)?,
            });
        }
        if rate.is_none() && budget.is_none() && q.max_in_flight.is_none() && limits.is_empty() {
            return Err(Error::policy(
                path,
                "a quota needs at least one of `rate`, `budget`, `max_in_flight`, `limits`",
            ));
        }
        Ok(Quota {
            name: name.into(),
            rate,
            budget,
            max_in_flight: q.max_in_flight,
            limits: limits.into_boxed_slice(),
        })
    }

    /// The quota named at `path`, by id.
    pub(super) fn quota_ref(&self, name: &Option<String>, path: &str) -> Result<Option<QuotaId>> {
        match name {
            None => Ok(None),
            Some(n) => self.quota_id(n).map(Some).ok_or_else(|| {
                Error::policy(
                    path,
                    format!("unknown quota `{n}` (declare it under `quotas`)"),
                )
            }),
        }
    }
}

/// Per-action budget costs (default 1), from the `costs` table.
pub(super) fn compile_costs(
    policy: &CompiledPolicy,
    costs: &BTreeMap<String, i64>,
) -> Result<Box<[u32]>> {
    let mut out = vec![1u32; policy.action_count()];
    for (action, cost) in costs {
        let path = format!("costs.{}", key(action));
        let id: ActionId = policy.action_id(action).ok_or_else(|| {
            Error::policy(
                &path,
                format!("unknown action `{action}` (declare it in `actions`)"),
            )
        })?;
        if let Some(slot) = out.get_mut(id as usize) {
            *slot = parse_cost(*cost, &path)?;
        }
    }
    Ok(out.into_boxed_slice())
}

/// A template's `breaker`.
pub(super) fn compile_breaker(b: &BreakerSpec, path: &str) -> Result<BreakerConfig> {
    BreakerConfig::parse(b.quota_denials, b.policy_denials, &b.window, path)
}
