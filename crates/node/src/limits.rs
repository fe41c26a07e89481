//! Fair limits at the ingress: request rates (GCRA, `governor`) per function and per tenant,
//! and concurrency per function (its own limit) and per tenant, with a short bounded wait for a
//! place before a 429 — never an unbounded queue.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use picloud_edge::{ApiError, InFlight, InFlightGuard, Slot};
use picloud_store::Route;

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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use picloud_store::FunctionLimits;

    use super::*;

    fn route(tenant_id: i64, function_id: i64, concurrency: u64) -> Route {
        Route {
            tenant_id,
            tenant: format!("t{tenant_id}"),
            function_id,
            function: format!("f{function_id}"),
            public: true,
            forward_authorization: false,
            version: 1,
            source: String::new(),
            limits: FunctionLimits {
                concurrency,
                ..FunctionLimits::DEFAULT
            },
            env: BTreeMap::new(),
        }
    }

    fn ingress(config: IngressConfig) -> Ingress {
        Ingress::new(config, Arc::default())
    }

    fn why(refused: Result<(), (Rejection, ApiError)>) -> Rejection {
        match refused {
            Err((why, ApiError::TooManyRequests { retry_after, .. })) => {
                assert!(retry_after >= 1, "a Retry-After of at least a second");
                why
            }
            Err((why, other)) => panic!("{why:?} answered {other:?}, not a 429"),
            Ok(()) => panic!("let through"),
        }
    }

    #[test]
    fn a_functions_rate_stops_it_and_spares_its_neighbours() {
        let ingress = ingress(IngressConfig {
            function_rate: 2,
            tenant_rate: 0,
            ..IngressConfig::default()
        });
        let (busy, quiet) = (route(1, 10, 8), route(1, 11, 8));
        assert!(ingress.within_rates(&busy).is_ok());
        assert!(ingress.within_rates(&busy).is_ok());
        assert_eq!(why(ingress.within_rates(&busy)), Rejection::Rate);
        assert!(ingress.within_rates(&quiet).is_ok(), "another function");
    }

    #[test]
    fn a_tenants_rate_counts_all_its_functions_and_no_one_elses() {
        let ingress = ingress(IngressConfig {
            function_rate: 0,
            tenant_rate: 3,
            ..IngressConfig::default()
        });
        let (a, b, stranger) = (route(1, 10, 8), route(1, 11, 8), route(2, 20, 8));
        for r in [&a, &b, &a] {
            assert!(ingress.within_rates(r).is_ok());
        }
        assert_eq!(why(ingress.within_rates(&b)), Rejection::TenantRate);
        assert!(ingress.within_rates(&stranger).is_ok(), "another tenant");
    }

    #[test]
    fn a_rate_of_zero_is_no_limit() {
        let ingress = ingress(IngressConfig {
            function_rate: 0,
            tenant_rate: 0,
            ..IngressConfig::default()
        });
        let r = route(1, 10, 8);
        assert!((0..10_000).all(|_| ingress.within_rates(&r).is_ok()));
    }

    #[tokio::test]
    async fn places_are_per_function_and_per_tenant_and_come_back() {
        let ingress = ingress(IngressConfig {
            tenant_concurrency: 2,
            queue_wait: Duration::from_millis(30),
            ..IngressConfig::default()
        });
        let (one, two, three) = (route(1, 10, 1), route(1, 11, 5), route(1, 12, 5));
        let held = ingress.places(&one).await.expect("a place");
        let started = tokio::time::Instant::now();
        let refused = ingress
            .places(&one)
            .await
            .expect_err("its one place is taken");
        assert_eq!(refused.0, Rejection::Concurrency);
        assert!(
            started.elapsed() >= Duration::from_millis(30),
            "it waited its bound first"
        );
        let _second = ingress
            .places(&two)
            .await
            .expect("the tenant's second place");
        let refused = ingress
            .places(&three)
            .await
            .expect_err("the tenant is full");
        assert_eq!(refused.0, Rejection::TenantConcurrency);
        assert!(
            ingress.places(&route(2, 20, 1)).await.is_ok(),
            "another tenant is not held up"
        );
        drop(held);
        assert!(
            ingress.places(&one).await.is_ok(),
            "a freed place is taken again"
        );
    }

    #[tokio::test]
    async fn a_place_freed_within_the_wait_goes_to_the_waiter() {
        let ingress = Arc::new(ingress(IngressConfig {
            queue_wait: Duration::from_secs(10),
            ..IngressConfig::default()
        }));
        let r = route(1, 10, 1);
        let held = ingress.places(&r).await.expect("a place");
        let waiter = {
            let (ingress, r) = (Arc::clone(&ingress), r.clone());
            tokio::spawn(async move { ingress.places(&r).await.map(|g| g.len()) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "it waits while the place is held");
        drop(held);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken when the place is freed, not at the end of its wait")
            .expect("the waiter");
        assert_eq!(
            got.map_err(|e| e.0),
            Ok(2),
            "both places, function and tenant"
        );
    }
}
