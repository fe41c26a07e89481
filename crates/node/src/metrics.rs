//! Per-function Prometheus metrics (DESIGN.md §5), labelled `tenant` and `function`.
//!
//! A function's series exist from the moment it is routable, every outcome pre-set to 0 (so a
//! rate or an alert on `script_error` works before the first error), and disappear when it
//! stops being routable (deleted, or nothing deployed).

use std::sync::Mutex;

use crate::limits::Rejection;
use picloud_shared::{InvocationResult, Outcome};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Pool and record figures read at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolFigures {
    pub warm: u64,
    pub busy: u64,
    /// Invocations so far that found no warm worker and waited for one.
    pub cold_starts_total: u64,
    /// Invocation records waiting to be written.
    pub records_queued: u64,
    /// Invocation records dropped so far.
    pub records_dropped_total: u64,
    /// Invocation records the database refused, set aside so far.
    pub records_rejected_total: u64,
}

/// The metrics of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    invocations: IntCounterVec,
    duration: HistogramVec,
    worker_wait: HistogramVec,
    fuel: IntCounterVec,
    memory: HistogramVec,
    rejected: IntCounterVec,
    pool_warm: IntGauge,
    pool_busy: IntGauge,
    cold_starts: IntCounter,
    cold_starts_seen: Mutex<u64>,
    records_queued: IntGauge,
    records_dropped: IntCounter,
    records_dropped_seen: Mutex<u64>,
    records_rejected: IntCounter,
    records_rejected_seen: Mutex<u64>,
    schedule_runs: IntCounterVec,
    schedule_late: HistogramVec,
    schedule_skipped: IntCounterVec,
    schedule_abandoned: IntCounterVec,
}

const FUNCTION: [&str; 2] = ["tenant", "function"];

fn must<T>(r: prometheus::Result<T>) -> T {
    // The metric definitions below are constants: only a programming error makes them fail.
    #[allow(clippy::expect_used)]
    r.expect("a valid, uniquely named metric")
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let invocations = must(IntCounterVec::new(
            Opts::new(
                "picloud_function_invocations_total",
                "Invocations of the function, by outcome.",
            ),
            &["tenant", "function", "outcome"],
        ));
        let duration = must(HistogramVec::new(
            HistogramOpts::new(
                "picloud_function_duration_seconds",
                "Time an invocation took in the executor.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &FUNCTION,
        ));
        let worker_wait = must(HistogramVec::new(
            HistogramOpts::new(
                "picloud_function_worker_wait_seconds",
                "Time an invocation waited for a worker process (or a runner thread in instance \
                 mode) before it ran; part of the duration.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            &FUNCTION,
        ));
        let fuel = must(IntCounterVec::new(
            Opts::new(
                "picloud_function_fuel_consumed_total",
                "Wasm fuel the function's invocations used.",
            ),
            &FUNCTION,
        ));
        let memory = must(HistogramVec::new(
            HistogramOpts::new(
                "picloud_function_peak_memory_bytes",
                "Peak linear memory of an invocation.",
            )
            .buckets(prometheus::exponential_buckets(1_048_576.0, 2.0, 9).unwrap_or_default()),
            &FUNCTION,
        ));
        let rejected = must(IntCounterVec::new(
            Opts::new(
                "picloud_function_rejected_total",
                "Requests refused before running, by reason.",
            ),
            &["tenant", "function", "reason"],
        ));
        let pool_warm = must(IntGauge::new(
            "picloud_pool_warm_workers",
            "Sandboxed worker processes waiting for an invocation.",
        ));
        let pool_busy = must(IntGauge::new(
            "picloud_pool_busy_workers",
            "Worker processes running an invocation.",
        ));
        let cold_starts = must(IntCounter::new(
            "picloud_pool_cold_starts_total",
            "Invocations that found no warm worker and waited for one.",
        ));
        let records_queued = must(IntGauge::new(
            "picloud_records_queued",
            "Invocation records waiting to be written.",
        ));
        let records_dropped = must(IntCounter::new(
            "picloud_records_dropped_total",
            "Invocation records dropped: the queue was full, or the database was away too long \
             for a server without a spool.",
        ));
        let records_rejected = must(IntCounter::new(
            "picloud_records_rejected_total",
            "Invocation records the database refused on their own (set aside in the spool's \
             rejected.jsonl, never retried).",
        ));
        let schedule_runs = must(IntCounterVec::new(
            Opts::new(
                "picloud_schedule_runs_total",
                "Schedule ticks run, by outcome (also counted in the function's invocations).",
            ),
            &["tenant", "function", "outcome"],
        ));
        let schedule_late = must(HistogramVec::new(
            HistogramOpts::new(
                "picloud_schedule_late_seconds",
                "How long after its tick a schedule run started.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0,
            ]),
            &FUNCTION,
        ));
        let schedule_skipped = must(IntCounterVec::new(
            Opts::new(
                "picloud_schedule_skipped_ticks_total",
                "Missed schedule ticks given up (older than the backfill window).",
            ),
            &FUNCTION,
        ));
        let schedule_abandoned = must(IntCounterVec::new(
            Opts::new(
                "picloud_schedule_abandoned_ticks_total",
                "Schedule ticks left unfinished by a scheduler that stopped mid-run; not rerun.",
            ),
            &FUNCTION,
        ));
        for c in [
            Box::new(records_queued.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(schedule_runs.clone()),
            Box::new(schedule_late.clone()),
            Box::new(schedule_skipped.clone()),
            Box::new(schedule_abandoned.clone()),
            Box::new(records_dropped.clone()),
            Box::new(records_rejected.clone()),
            Box::new(invocations.clone()),
            Box::new(duration.clone()),
            Box::new(worker_wait.clone()),
            Box::new(fuel.clone()),
            Box::new(memory.clone()),
            Box::new(rejected.clone()),
            Box::new(pool_warm.clone()),
            Box::new(pool_busy.clone()),
            Box::new(cold_starts.clone()),
        ] {
            must(registry.register(c));
        }
        Self {
            registry,
            invocations,
            duration,
            worker_wait,
            fuel,
            memory,
            rejected,
            pool_warm,
            pool_busy,
            cold_starts,
            cold_starts_seen: Mutex::new(0),
            records_queued,
            records_dropped,
            records_dropped_seen: Mutex::new(0),
            records_rejected,
            records_rejected_seen: Mutex::new(0),
            schedule_runs,
            schedule_late,
            schedule_skipped,
            schedule_abandoned,
        }
    }

    /// Creates the function's series, every outcome at 0.
    pub fn add_function(&self, tenant: &str, function: &str) {
        for kind in Outcome::KINDS {
            self.invocations
                .with_label_values(&[tenant, function, kind]);
        }
        for why in Rejection::ALL {
            self.rejected
                .with_label_values(&[tenant, function, why.label()]);
        }
        self.duration.with_label_values(&[tenant, function]);
        self.worker_wait.with_label_values(&[tenant, function]);
        self.fuel.with_label_values(&[tenant, function]);
        self.memory.with_label_values(&[tenant, function]);
    }

    /// Removes the function's series.
    pub fn remove_function(&self, tenant: &str, function: &str) {
        for kind in Outcome::KINDS {
            let _ = self
                .invocations
                .remove_label_values(&[tenant, function, kind]);
        }
        for why in Rejection::ALL {
            let _ = self
                .rejected
                .remove_label_values(&[tenant, function, why.label()]);
        }
        let _ = self.duration.remove_label_values(&[tenant, function]);
        let _ = self.worker_wait.remove_label_values(&[tenant, function]);
        let _ = self.fuel.remove_label_values(&[tenant, function]);
        let _ = self.memory.remove_label_values(&[tenant, function]);
        for kind in Outcome::KINDS {
            let _ = self
                .schedule_runs
                .remove_label_values(&[tenant, function, kind]);
        }
        let _ = self.schedule_late.remove_label_values(&[tenant, function]);
        let _ = self
            .schedule_skipped
            .remove_label_values(&[tenant, function]);
        let _ = self
            .schedule_abandoned
            .remove_label_values(&[tenant, function]);
    }

    /// Records one invocation.
    pub fn observe(&self, tenant: &str, function: &str, result: &InvocationResult) {
        self.invocations
            .with_label_values(&[tenant, function, result.outcome.kind()])
            .inc();
        self.duration
            .with_label_values(&[tenant, function])
            .observe(result.duration_us as f64 / 1e6);
        self.worker_wait
            .with_label_values(&[tenant, function])
            .observe(result.wait_us as f64 / 1e6);
        self.fuel
            .with_label_values(&[tenant, function])
            .inc_by(result.fuel_used);
        self.memory
            .with_label_values(&[tenant, function])
            .observe(result.peak_memory_bytes as f64);
    }

    /// Records a request refused by a limit.
    pub fn rejected(&self, tenant: &str, function: &str, why: Rejection) {
        self.rejected
            .with_label_values(&[tenant, function, why.label()])
            .inc();
    }

    /// The text exposition: everything, or (with `tenant`) only that tenant's function series.
    pub fn render(&self, pool: PoolFigures, tenant: Option<&str>) -> String {
        self.pool_warm.set(pool.warm as i64);
        self.pool_busy.set(pool.busy as i64);
        self.records_queued.set(pool.records_queued as i64);
        catch_up(
            &self.cold_starts,
            &self.cold_starts_seen,
            pool.cold_starts_total,
        );
        catch_up(
            &self.records_dropped,
            &self.records_dropped_seen,
            pool.records_dropped_total,
        );
        catch_up(
            &self.records_rejected,
            &self.records_rejected_seen,
            pool.records_rejected_total,
        );
        let mut families = self.registry.gather();
        if let Some(tenant) = tenant {
            families.retain_mut(|family| {
                let mine: Vec<_> = family
                    .get_metric()
                    .iter()
                    .filter(|m| {
                        m.get_label()
                            .iter()
                            .any(|l| l.name() == "tenant" && l.value() == tenant)
                    })
                    .cloned()
                    .collect();
                family.set_metric(mine);
                !family.get_metric().is_empty()
            });
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Brings a counter mirrored from a running total up to it.
fn catch_up(counter: &IntCounter, seen: &Mutex<u64>, total: u64) {
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    if total > *seen {
        counter.inc_by(total - *seen);
        *seen = total;
    }
}

/// Schedule runs count as the function's invocations too; their own series add how late they
/// started and the ticks given up or abandoned. Created at a function's first schedule event.
impl crate::scheduler::ScheduleObserver for Metrics {
    fn ran(
        &self,
        tenant: &str,
        function: &str,
        result: &InvocationResult,
        late: std::time::Duration,
    ) {
        self.observe(tenant, function, result);
        self.schedule_runs
            .with_label_values(&[tenant, function, result.outcome.kind()])
            .inc();
        self.schedule_late
            .with_label_values(&[tenant, function])
            .observe(late.as_secs_f64());
    }

    fn skipped(&self, tenant: &str, function: &str, ticks: u64) {
        self.schedule_skipped
            .with_label_values(&[tenant, function])
            .inc_by(ticks);
    }

    fn abandoned(&self, tenant: &str, function: &str, ticks: u64) {
        self.schedule_abandoned
            .with_label_values(&[tenant, function])
            .inc_by(ticks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exposition's sample lines of `name` that carry every one of `labels` (`k="v"`).
    fn samples<'a>(text: &'a str, name: &str, labels: &[&str]) -> Vec<&'a str> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter(|l| labels.iter().all(|label| l.contains(label)))
            .collect()
    }

    fn ok_result(fuel: u64) -> InvocationResult {
        InvocationResult {
            outcome: Outcome::Ok,
            response: None,
            duration_us: 1_500,
            wait_us: 100,
            fuel_used: fuel,
            peak_memory_bytes: 2 << 20,
            logs: Vec::new(),
            logs_truncated: false,
        }
    }

    #[test]
    fn a_routable_functions_series_start_at_zero_and_go_with_it() {
        let metrics = Metrics::new();
        metrics.add_function("acme", "hello");
        let text = metrics.render(PoolFigures::default(), None);
        for kind in Outcome::KINDS {
            let found = samples(
                &text,
                "picloud_function_invocations_total",
                &[
                    r#"tenant="acme""#,
                    r#"function="hello""#,
                    &format!(r#"outcome="{kind}""#),
                ],
            );
            assert_eq!(found.len(), 1, "{kind}: {text}");
            assert!(found[0].ends_with(" 0"), "{}", found[0]);
        }
        for why in Rejection::ALL {
            let label = format!(r#"reason="{}""#, why.label());
            let found = samples(&text, "picloud_function_rejected_total", &[&label]);
            assert_eq!(found.len(), 1, "{label}: {text}");
        }
        metrics.remove_function("acme", "hello");
        let text = metrics.render(PoolFigures::default(), None);
        assert!(!text.contains(r#"tenant="acme""#), "{text}");
        // The server's own series stay.
        assert!(text.contains("picloud_pool_warm_workers 0"), "{text}");
    }

    #[test]
    fn observations_count_and_a_tenants_view_holds_only_its_own() {
        let metrics = Metrics::new();
        metrics.add_function("acme", "hello");
        metrics.add_function("other", "secret");
        metrics.observe("acme", "hello", &ok_result(700));
        metrics.observe("acme", "hello", &ok_result(300));
        metrics.rejected("acme", "hello", Rejection::TenantRate);
        metrics.observe("other", "secret", &ok_result(5));

        let mine = metrics.render(PoolFigures::default(), Some("acme"));
        let ok = samples(
            &mine,
            "picloud_function_invocations_total",
            &[r#"function="hello""#, r#"outcome="ok""#],
        );
        assert_eq!(ok, vec![ok[0]], "{mine}");
        assert!(ok[0].ends_with(" 2"), "{}", ok[0]);
        let fuel = samples(&mine, "picloud_function_fuel_consumed_total", &[]);
        assert!(fuel.len() == 1 && fuel[0].ends_with(" 1000"), "{fuel:?}");
        let rate = samples(
            &mine,
            "picloud_function_rejected_total",
            &[r#"reason="tenant_rate""#],
        );
        assert!(rate.len() == 1 && rate[0].ends_with(" 1"), "{rate:?}");
        assert!(
            !mine.contains("other") && !mine.contains("secret"),
            "another tenant's series: {mine}"
        );
        assert!(
            !mine.contains("picloud_pool_"),
            "the server's own figures are not a tenant's: {mine}"
        );
        let all = metrics.render(PoolFigures::default(), None);
        assert!(all.contains(r#"tenant="other""#), "{all}");
    }

    #[test]
    fn mirrored_totals_only_ever_climb() {
        let metrics = Metrics::new();
        let with = |cold: u64| PoolFigures {
            warm: 3,
            busy: 1,
            cold_starts_total: cold,
            ..PoolFigures::default()
        };
        let text = metrics.render(with(5), None);
        assert!(text.contains("picloud_pool_cold_starts_total 5"), "{text}");
        assert!(text.contains("picloud_pool_warm_workers 3"), "{text}");
        let text = metrics.render(with(7), None);
        assert!(text.contains("picloud_pool_cold_starts_total 7"), "{text}");
        // A total that went down (a restarted pool) leaves the counter where it was: a
        // Prometheus counter never decreases.
        let text = metrics.render(with(2), None);
        assert!(text.contains("picloud_pool_cold_starts_total 7"), "{text}");
    }
}
