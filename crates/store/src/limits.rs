//! Per-function limits, their defaults, and the ceilings an admin sets per tenant.
//!
//! A function stores only the limits it chose ([`LimitOverrides`]); the rest follow
//! [`FunctionLimits::DEFAULT`]. A tenant stores only the ceilings the admin chose; the rest
//! follow [`FunctionLimits::CEILING`]. Storing choices rather than resolved values means a new
//! release's defaults reach every function that never chose its own.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Limits as chosen: each `None` falls back (to the default for a function, to the platform
/// ceiling for a tenant).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// Wall-clock deadline of one invocation, in milliseconds.
    pub timeout_ms: Option<i64>,
    /// Wasm fuel of one invocation (about one unit per wasm instruction).
    pub fuel: Option<i64>,
    /// Linear memory ceiling of one invocation, in bytes.
    pub memory_bytes: Option<i64>,
    /// Invocations of the function running at once; more are refused with 429.
    pub concurrency: Option<i64>,
}

/// Limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FunctionLimits {
    pub timeout_ms: u64,
    pub fuel: u64,
    pub memory_bytes: u64,
    pub concurrency: u64,
}

/// A chosen limit outside what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} = {value} is {problem} {bound}")]
pub struct LimitError {
    pub field: &'static str,
    pub value: i64,
    pub problem: &'static str,
    pub bound: u64,
}

impl FunctionLimits {
    /// What a function gets when it chooses nothing: 5 s, 10⁹ fuel (about a second of CPU on
    /// a Raspberry Pi class core), 64 MiB, 16 at once.
    pub const DEFAULT: Self = Self {
        timeout_ms: 5_000,
        fuel: 1_000_000_000,
        memory_bytes: 64 << 20,
        concurrency: 16,
    };

    /// The most a tenant may be allowed, and what it is allowed when the admin chose nothing:
    /// 30 s, 10¹⁰ fuel, 256 MiB (the executor's own memory ceiling), 64 at once.
    pub const CEILING: Self = Self {
        timeout_ms: 30_000,
        fuel: 10_000_000_000,
        memory_bytes: picloud_shared::MAX_MEMORY_BYTES_CEILING,
        concurrency: 64,
    };

    /// The least any limit may be set to: below these even a hello world cannot run.
    pub const FLOOR: Self = Self {
        timeout_ms: 10,
        fuel: 1_000_000,
        memory_bytes: 8 << 20,
        concurrency: 1,
    };

    /// `overrides` where chosen, `self` elsewhere.
    pub fn with(self, overrides: &LimitOverrides) -> Self {
        let pick = |o: Option<i64>, d: u64| o.and_then(|v| u64::try_from(v).ok()).unwrap_or(d);
        Self {
            timeout_ms: pick(overrides.timeout_ms, self.timeout_ms),
            fuel: pick(overrides.fuel, self.fuel),
            memory_bytes: pick(overrides.memory_bytes, self.memory_bytes),
            concurrency: pick(overrides.concurrency, self.concurrency),
        }
    }

    /// Each limit lowered to `ceiling`'s: a ceiling lowered after a function chose its limits
    /// still binds it.
    pub fn capped(self, ceiling: &Self) -> Self {
        Self {
            timeout_ms: self.timeout_ms.min(ceiling.timeout_ms),
            fuel: self.fuel.min(ceiling.fuel),
            memory_bytes: self.memory_bytes.min(ceiling.memory_bytes),
            concurrency: self.concurrency.min(ceiling.concurrency),
        }
    }

    /// The limits a tenant's functions run under: the function's choices over the defaults,
    /// capped by the tenant's ceilings.
    pub fn resolve(function: &LimitOverrides, tenant_ceilings: &LimitOverrides) -> Self {
        Self::DEFAULT
            .with(function)
            .capped(&Self::CEILING.with(tenant_ceilings))
    }
}

impl LimitOverrides {
    fn fields(&self) -> [(&'static str, Option<i64>, u64, u64); 4] {
        let (f, c) = (FunctionLimits::FLOOR, FunctionLimits::CEILING);
        [
            ("timeout_ms", self.timeout_ms, f.timeout_ms, c.timeout_ms),
            ("fuel", self.fuel, f.fuel, c.fuel),
            (
                "memory_bytes",
                self.memory_bytes,
                f.memory_bytes,
                c.memory_bytes,
            ),
            (
                "concurrency",
                self.concurrency,
                f.concurrency,
                c.concurrency,
            ),
        ]
    }

    /// Checks a function's choices against the floor and the tenant's ceilings.
    ///
    /// # Errors
    ///
    /// The first limit below the floor or above the ceiling.
    pub fn check_within(&self, tenant_ceilings: &LimitOverrides) -> Result<(), LimitError> {
        let ceiling = FunctionLimits::CEILING.with(tenant_ceilings);
        let ceilings = [
            ceiling.timeout_ms,
            ceiling.fuel,
            ceiling.memory_bytes,
            ceiling.concurrency,
        ];
        for ((field, value, floor, _), max) in self.fields().into_iter().zip(ceilings) {
            check(field, value, floor, max, "above this tenant's ceiling of")?;
        }
        Ok(())
    }

    /// Checks an admin's ceilings against the floor and the platform's ceiling.
    ///
    /// # Errors
    ///
    /// The first ceiling below the floor or above the platform's ceiling.
    pub fn check_ceilings(&self) -> Result<(), LimitError> {
        for (field, value, floor, max) in self.fields() {
            check(field, value, floor, max, "above the platform's ceiling of")?;
        }
        Ok(())
    }
}

fn check(
    field: &'static str,
    value: Option<i64>,
    floor: u64,
    max: u64,
    above: &'static str,
) -> Result<(), LimitError> {
    let Some(value) = value else { return Ok(()) };
    let err = |problem, bound| LimitError {
        field,
        value,
        problem,
        bound,
    };
    match u64::try_from(value) {
        Ok(v) if v < floor => Err(err("below the least allowed,", floor)),
        Ok(v) if v > max => Err(err(above, max)),
        Ok(_) => Ok(()),
        Err(_) => Err(err("below the least allowed,", floor)),
    }
}

/// The limits a function runs under, as the executor takes them.
pub fn executor_limits(limits: &FunctionLimits) -> picloud_shared::Limits {
    picloud_shared::Limits {
        fuel: limits.fuel,
        memory_bytes: limits.memory_bytes,
        timeout_ms: limits.timeout_ms,
        ..picloud_shared::Limits::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_fall_back_and_ceilings_bind() {
        let function = LimitOverrides {
            timeout_ms: Some(20_000),
            ..LimitOverrides::default()
        };
        let tenant = LimitOverrides {
            timeout_ms: Some(10_000),
            ..LimitOverrides::default()
        };
        let limits = FunctionLimits::resolve(&function, &tenant);
        assert_eq!(limits.timeout_ms, 10_000);
        assert_eq!(limits.fuel, FunctionLimits::DEFAULT.fuel);
        let err = function
            .check_within(&tenant)
            .expect_err("above the ceiling");
        assert_eq!(
            err.to_string(),
            "timeout_ms = 20000 is above this tenant's ceiling of 10000"
        );
        assert!(function.check_within(&LimitOverrides::default()).is_ok());
    }

    #[test]
    fn floors_and_platform_ceilings() {
        let tiny = LimitOverrides {
            memory_bytes: Some(1024),
            ..LimitOverrides::default()
        };
        assert_eq!(
            tiny.check_within(&LimitOverrides::default())
                .expect_err("too small")
                .field,
            "memory_bytes"
        );
        let negative = LimitOverrides {
            fuel: Some(-1),
            ..LimitOverrides::default()
        };
        assert!(negative.check_ceilings().is_err());
        let huge = LimitOverrides {
            concurrency: Some(1_000),
            ..LimitOverrides::default()
        };
        assert!(huge.check_ceilings().is_err());
    }
}
