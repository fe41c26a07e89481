//! Fair limits at the ingress: request rates (GCRA, `governor`) per function and per tenant,
//! and concurrency per function (its own limit) and per tenant, with a short bounded wait for a
//! place before a 429 — never an unbounded queue.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use picloud_manager_core::Route;
use picloud_manager_core::api::{ApiError, InFlight, InFlightGuard, Slot};

/// The ingress limits of one server.
#[derive(Debug, Clone, Copy)]
pub struct IngressConfig {
    /// Invocations of one tenant's functions running at once. Default 32.
    pub tenant_concurrency: u64,
    /// Requests per second to one function; 0 = no limit. Default 1,000.
    pub function_rate: u32,
    /// Requests per second to one tenant's functions; 0 = no limit. Default 2,000.
    pub tenant_rate: u32,
    /// How long a request may wait for a place before it is refused. Default 100 ms.
    pub queue_wait: Duration,
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self {
            tenant_concurrency: 32,
            function_rate: 1_000,
            tenant_rate: 2_000,
            queue_wait: Duration::from_millis(100),
        }
    }
}

/// Why a request was refused; the label of `picloud_function_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Concurrency,
    TenantConcurrency,
    Rate,
    TenantRate,
}

impl Rejection {
    pub const ALL: [Self; 4] = [
        Self::Concurrency,
        Self::TenantConcurrency,
        Self::Rate,
        Self::TenantRate,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Concurrency => "concurrency",
            Self::TenantConcurrency => "tenant_concurrency",
            Self::Rate => "rate",
            Self::TenantRate => "tenant_rate",
        }
    }
}

/// Rate limiters and concurrency counters.
#[derive(Debug)]
pub struct Ingress {
    config: IngressConfig,
    in_flight: Arc<InFlight>,
    functions: Option<DefaultKeyedRateLimiter<i64>>,
    tenants: Option<DefaultKeyedRateLimiter<i64>>,
}

fn limiter(per_second: u32) -> Option<DefaultKeyedRateLimiter<i64>> {
    NonZeroU32::new(per_second).map(|n| RateLimiter::keyed(Quota::per_second(n)))
}

impl Ingress {
    /// `in_flight` is shared with the API's test-invokes, so that both count against a
    /// function's concurrency.
    pub fn new(config: IngressConfig, in_flight: Arc<InFlight>) -> Self {
        Self {
            functions: limiter(config.function_rate),
            tenants: limiter(config.tenant_rate),
            config,
            in_flight,
        }
    }

    /// Counts one request to `route` against the function's and the tenant's rates; refused
    /// past either. Checked before anything else costs (a token check, a body read), so that a
    /// flood, forged tokens included, is turned away for the price of a GCRA step.
    pub fn within_rates(&self, route: &Route) -> Result<(), (Rejection, ApiError)> {
        let rate = |limiter: &Option<DefaultKeyedRateLimiter<i64>>,
                    key: i64,
                    per: u32,
                    what: Rejection| {
            let Some(limiter) = limiter else {
                return Ok(());
            };
            limiter.check_key(&key).map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let whose = if what == Rejection::Rate {
                    "function"
                } else {
                    "tenant"
                };
                (
                    what,
                    ApiError::TooManyRequests {
                        message: format!(
                            "over this {whose}'s rate limit of {per} requests per second"
                        ),
                        retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
                    },
                )
            })
        };
        rate(
            &self.functions,
            route.function_id,
            self.config.function_rate,
            Rejection::Rate,
        )?;
        rate(
            &self.tenants,
            route.tenant_id,
            self.config.tenant_rate,
            Rejection::TenantRate,
        )
    }

    /// A place in both concurrency limits of `route` (waiting up to the configured bound).
    /// The guards free the places when dropped.
    pub async fn places(&self, route: &Route) -> Result<Vec<InFlightGuard>, (Rejection, ApiError)> {
        let slots = [
            (Slot::Function(route.function_id), route.limits.concurrency),
            (
                Slot::Tenant(route.tenant_id),
                self.config.tenant_concurrency,
            ),
        ];
        self.in_flight
            .acquire(&slots, self.config.queue_wait)
            .await
            .map_err(|full| {
                let (what, message) = match full {
                    Slot::Function(_) => (
                        Rejection::Concurrency,
                        format!(
                            "{} invocations of this function are running, its concurrency limit",
                            route.limits.concurrency
                        ),
                    ),
                    Slot::Tenant(_) => (
                        Rejection::TenantConcurrency,
                        format!(
                            "{} invocations of this tenant's functions are running, its concurrency limit",
                            self.config.tenant_concurrency
                        ),
                    ),
                };
                (
                    what,
                    ApiError::TooManyRequests {
                        message,
                        retry_after: 1,
                    },
                )
            })
    }
}
