//! The scheduler, on every node: cron triggers that run a function's `on_schedule(event)` once
//! per tick. (Schedules are created and changed through the control plane's API; their cron
//! specs are `picloud_store::schedule_spec`.)
//!
//! # Exactly once
//!
//! A schedule's row holds `next_run_at`, the first tick nobody has claimed. A scheduler claims
//! due ticks with a compare-and-set on it ([`ScheduleStore::claim_ticks`](picloud_store::ScheduleStore::claim_ticks)) and writes one
//! `schedule_runs` row per tick it will run, under a unique key on (schedule, tick): of several
//! schedulers (managers on one PostgreSQL, or a restarted one) exactly one wins each tick. A
//! claim also takes a lease (`running_until`) covering the runs: no other claim on the schedule
//! succeeds while it holds, so two runs of one schedule never overlap. A run longer than the
//! schedule's period therefore delays the next one: the ticks that came due meanwhile are
//! treated as missed (below) when the run ends.
//!
//! If the manager running a tick dies, the lease lapses (after the function's timeout and a
//! margin), the next claim marks the unfinished tick `abandoned` and it is not run again: it
//! may have done part of its work, and running it twice is the worse surprise. Claims are
//! durable, so a killed manager never makes a tick run twice or vanish unaccounted.
//!
//! # Missed ticks
//!
//! A tick is missed when no scheduler ran it within [`SchedulerConfig::grace`] of its time
//! (every manager was down, or a previous run overran). Of the missed ticks, the most recent
//! [`SchedulerConfig::backfill`] (default 1) run at once, in order, with `backfill: true`; the
//! older ones are skipped and counted (`skipped_ticks` on the schedule, and a metric).
//!
//! # No polling
//!
//! The scheduler sleeps until the earliest due tick and wakes early only when told of a
//! schedule change (the store's announcements: `NOTIFY` on PostgreSQL). With nothing scheduled
//! it waits on that alone and uses no CPU.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use picloud_shared::{FunctionRef, InvocationRequest, InvocationResult};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use picloud_executor_protocol::{Invocation, Invoker};
use picloud_store::limits::executor_limits;
use picloud_store::records::{InvocationRecord, Recorder, Trigger};
use picloud_store::routes::{RouteEvent, RouteWatch};
use picloud_store::schedule_spec::{CronSpec, event_json};
use picloud_store::{AnyStore, Schedule, ScheduleClaim, StoreError, now_ms};

/// How schedules are run.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// Missed ticks run after downtime, the most recent ones; older ones are skipped and
    /// counted. 0 skips them all. Default 1.
    pub backfill: u32,
    /// How late a tick may start and still count as on time. Default 5 s.
    pub grace: Duration,
    /// Added to the function's timeout for the lease of a run. Default 10 s.
    pub lease_margin: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            backfill: 1,
            grace: Duration::from_secs(5),
            lease_margin: Duration::from_secs(10),
        }
    }
}

/// Told of what the scheduler does, for metrics.
pub trait ScheduleObserver: Send + Sync + 'static {
    /// A tick ran `late` after its time.
    fn ran(&self, tenant: &str, function: &str, result: &InvocationResult, late: Duration);
    /// Missed ticks were given up.
    fn skipped(&self, tenant: &str, function: &str, ticks: u64);
    /// Ticks were found left unfinished by a scheduler that stopped.
    fn abandoned(&self, tenant: &str, function: &str, ticks: u64);
}

/// What a claim of a schedule's due ticks does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Ticks to run now, oldest first, with whether each is a backfill.
    pub runs: Vec<(i64, bool)>,
    /// Missed ticks given up.
    pub skipped: u64,
    /// The new `next_run_at`: the first tick after `now` (`i64::MAX` when there is none).
    pub following: i64,
}

/// Decides what to do at `now` (Unix ms) with a schedule whose first unclaimed tick is
/// `next_run_at`; `None` when nothing is due.
pub fn plan(spec: &CronSpec, next_run_at: i64, now: i64, config: &SchedulerConfig) -> Option<Plan> {
    if next_run_at > now {
        return None;
    }
    let keep = (config.backfill as usize).max(1);
    let (count, last) = spec.ticks_between(next_run_at, now, keep);
    let following = spec.next_after(now).unwrap_or(i64::MAX);
    let grace = i64::try_from(config.grace.as_millis()).unwrap_or(i64::MAX);
    let runs: Vec<(i64, bool)> = match last.as_slice() {
        [only] if count == 1 && now - only <= grace => vec![(*only, false)],
        _ => {
            let backfill = (config.backfill as usize).min(last.len());
            last[last.len() - backfill..]
                .iter()
                .map(|&t| (t, true))
                .collect()
        }
    };
    Some(Plan {
        skipped: count - runs.len() as u64,
        runs,
        following,
    })
}

/// A running scheduler; [`Scheduler::stop`] ends it.
#[derive(Debug)]
pub struct Scheduler {
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl Scheduler {
    /// Loads every enabled schedule and runs their ticks from now on.
    ///
    /// # Errors
    ///
    /// When the store cannot be read.
    pub async fn start(
        store: AnyStore,
        invoker: Arc<dyn Invoker>,
        recorder: Arc<Recorder>,
        observer: Arc<dyn ScheduleObserver>,
        config: SchedulerConfig,
    ) -> Result<Self, StoreError> {
        // Subscribe before loading, so that no change falls between the two.
        let watch = store.watch_routes().await?;
        let schedules = store.enabled_schedules().await?;
        let (stop, stopped) = watch::channel(false);
        let mut suffix = [0u8; 4];
        let _ = getrandom::fill(&mut suffix);
        let owner = format!(
            "pid{}-{:08x}",
            std::process::id(),
            u32::from_le_bytes(suffix)
        );
        let runner = Runner {
            store,
            invoker,
            recorder,
            observer,
            config,
            owner: owner.into(),
        };
        let done = tokio::spawn(runner.run(schedules, watch, stopped));
        Ok(Self { stop, done })
    }

    /// Stops claiming ticks and waits up to `within` for the runs in progress; true if they
    /// all finished (a run cut short is marked abandoned by the next claim).
    pub async fn stop(self, within: Duration) -> bool {
        let _ = self.stop.send(true);
        tokio::time::timeout(within, self.done).await.is_ok()
    }
}

/// What the scheduler knows of one schedule between reloads.
#[derive(Debug, Clone, Copy)]
struct Due {
    next_run_at: i64,
    running_until: Option<i64>,
}

impl Due {
    fn of(s: &Schedule) -> Self {
        Self {
            next_run_at: s.next_run_at,
            running_until: s.running_until,
        }
    }

    /// When to look at the schedule again: its next tick, or when another scheduler's lease
    /// lapses if that is later. A scheduler that ends its runs in time announces it (see
    /// [`ScheduleStore::release_schedule`](picloud_store::ScheduleStore::release_schedule)), which wakes the others at once; the lease only matters
    /// when that scheduler died mid-run.
    fn wake_at(&self) -> i64 {
        // A lease holds up to and including `running_until`.
        self.running_until
            .map_or(self.next_run_at, |lease| (lease + 1).max(self.next_run_at))
    }
}

struct Runner {
    store: AnyStore,
    invoker: Arc<dyn Invoker>,
    recorder: Arc<Recorder>,
    observer: Arc<dyn ScheduleObserver>,
    config: SchedulerConfig,
    owner: Arc<str>,
}

impl Runner {
    async fn run(
        self,
        schedules: Vec<Schedule>,
        mut watch: RouteWatch,
        mut stopped: watch::Receiver<bool>,
    ) {
        let this = Arc::new(self);
        // The watch is read in a task of its own: a `select!` below may drop any branch's
        // future, and a channel's receive loses nothing when it is.
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let forward = tokio::spawn(async move {
            loop {
                if events_tx.send(watch.next().await).is_err() {
                    return;
                }
            }
        });
        let mut known: HashMap<i64, Due> = schedules.iter().map(|s| (s.id, Due::of(s))).collect();
        let mut busy: HashSet<i64> = HashSet::new();
        let mut tasks = JoinSet::new();
        let (finished_tx, mut finished) = mpsc::unbounded_channel::<i64>();
        loop {
            // Finished runs are reaped here; `finished` below said which.
            while tasks.try_join_next().is_some() {}
            let now = now_ms();
            // Start every due schedule not already running here.
            let due: Vec<i64> = known
                .iter()
                .filter(|(id, d)| !busy.contains(id) && d.wake_at() <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in due {
                busy.insert(id);
                let this = Arc::clone(&this);
                let finished = finished_tx.clone();
                tasks.spawn(async move {
                    if let Err(e) = this.run_due(id).await {
                        tracing::warn!(schedule = id, error = %e, "schedule run failed");
                    }
                    let _ = finished.send(id);
                });
            }
            let wake = known
                .iter()
                .filter(|(id, _)| !busy.contains(id))
                .map(|(_, d)| d.wake_at())
                .min();
            let sleep = async {
                match wake {
                    Some(at) => {
                        let ms = u64::try_from(at - now_ms()).unwrap_or(0);
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => {}
                _ = stopped.changed() => break,
                Some(id) = finished.recv() => {
                    busy.remove(&id);
                    this.reload(&mut known, Some(id)).await;
                }
                Some(event) = events.recv() => match event {
                    RouteEvent::Schedule(id) => this.reload(&mut known, Some(id)).await,
                    RouteEvent::Resync => this.reload(&mut known, None).await,
                    RouteEvent::Function(_) | RouteEvent::Tenant(_) | RouteEvent::Token(_) => {}
                },
            }
        }
        forward.abort();
        // Stopping: let the runs in progress finish (the caller bounds the wait).
        while tasks.join_next().await.is_some() {}
    }

    /// Re-reads one schedule (or all); a read that fails is retried at the next wake-up by
    /// treating the schedule as due.
    async fn reload(&self, known: &mut HashMap<i64, Due>, id: Option<i64>) {
        match id {
            Some(id) => match self.store.schedule(id).await {
                Ok(Some(s)) if s.enabled => {
                    known.insert(id, Due::of(&s));
                }
                Ok(_) => {
                    known.remove(&id);
                }
                Err(e) => {
                    tracing::warn!(schedule = id, error = %e, "cannot read a schedule; retrying");
                    known.insert(
                        id,
                        Due {
                            next_run_at: now_ms() + 1000,
                            running_until: None,
                        },
                    );
                }
            },
            None => match self.store.enabled_schedules().await {
                Ok(all) => *known = all.iter().map(|s| (s.id, Due::of(s))).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the schedules; retrying");
                    for due in known.values_mut() {
                        due.next_run_at = due.next_run_at.min(now_ms() + 1000);
                    }
                }
            },
        }
    }

    /// Claims and runs a schedule's due ticks, if it still has any.
    async fn run_due(&self, id: i64) -> Result<(), StoreError> {
        if !self.invoker.ready() {
            // This node cannot run anything now: leave the tick to a healthy one, and look
            // again in a second.
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Ok(());
        }
        let Some(schedule) = self.store.schedule(id).await? else {
            return Ok(());
        };
        let now = now_ms();
        if !schedule.enabled
            || schedule.next_run_at > now
            || schedule.running_until.is_some_and(|lease| lease >= now)
        {
            return Ok(());
        }
        let spec = match CronSpec::parse(&schedule.cron, &schedule.time_zone) {
            Ok(spec) => spec,
            Err(e) => {
                tracing::error!(schedule = id, error = %e, "a stored schedule no longer parses");
                return Ok(());
            }
        };
        let Some(route) = self.store.function_route(schedule.function_id).await? else {
            return Ok(());
        };
        let Some(plan) = plan(&spec, schedule.next_run_at, now, &self.config) else {
            return Ok(());
        };
        let per_run = route.limits.timeout_ms as i64
            + i64::try_from(self.config.lease_margin.as_millis()).unwrap_or(i64::MAX);
        let lease_until = now + per_run * (plan.runs.len() as i64).max(1);
        let claim = ScheduleClaim {
            schedule_id: id,
            expected_next: schedule.next_run_at,
            following: plan.following,
            lease_until,
            runs: &plan.runs,
            skipped: plan.skipped,
            owner: &self.owner,
            now,
        };
        let Some(abandoned) = self.store.claim_ticks(&claim).await? else {
            return Ok(());
        };
        if abandoned > 0 {
            tracing::warn!(
                schedule = id,
                abandoned,
                "ticks left unfinished by a stopped scheduler"
            );
            self.observer
                .abandoned(&route.tenant, &route.function, abandoned);
        }
        if plan.skipped > 0 {
            tracing::info!(
                schedule = id,
                skipped = plan.skipped,
                "missed ticks skipped"
            );
            self.observer
                .skipped(&route.tenant, &route.function, plan.skipped);
        }
        let payload = schedule.payload_value();
        let owner = FunctionRef::new(route.tenant.clone(), route.function.clone());
        let request = InvocationRequest::get("/");
        let limits = executor_limits(&route.limits);
        for &(due_at, backfill) in &plan.runs {
            let fired_at = now_ms();
            let event = event_json(id, due_at, fired_at, &payload, backfill);
            let result = self
                .invoker
                .invoke(Invocation {
                    tenant_id: route.tenant_id,
                    owner: &owner,
                    script: &route.source,
                    request: &request,
                    limits: &limits,
                    env: &route.env,
                    event: Some(&event),
                })
                .await;
            let late = Duration::from_millis(u64::try_from(fired_at - due_at).unwrap_or(0));
            self.observer
                .ran(&route.tenant, &route.function, &result, late);
            self.recorder.record(
                InvocationRecord::new(
                    route.tenant_id,
                    route.function_id,
                    route.version,
                    Trigger::Schedule,
                    &result,
                )
                .scheduled_by(id),
            );
            self.store
                .finish_run(id, due_at, result.outcome.kind(), now_ms())
                .await?;
        }
        self.store.release_schedule(id, lease_until).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use picloud_store::schedule_spec::utc_ms;

    fn config(backfill: u32) -> SchedulerConfig {
        SchedulerConfig {
            backfill,
            ..SchedulerConfig::default()
        }
    }

    #[test]
    fn an_on_time_tick_runs_alone() {
        let spec = CronSpec::parse("* * * * * *", "UTC").expect("spec");
        let t = utc_ms(2026, 5, 1, 12, 0, 0);
        assert_eq!(plan(&spec, t, t - 1, &config(1)), None, "not due yet");
        assert_eq!(
            plan(&spec, t, t + 20, &config(1)),
            Some(Plan {
                runs: vec![(t, false)],
                skipped: 0,
                following: t + 1000
            })
        );
    }

    #[test]
    fn after_downtime_the_most_recent_ticks_backfill_and_the_rest_are_counted() {
        let spec = CronSpec::parse("* * * * * *", "UTC").expect("spec");
        let t = utc_ms(2026, 5, 1, 12, 0, 0);
        // Down for 10 s: ticks t .. t+10 s are due at t+10.5 s.
        let now = t + 10_500;
        let one = plan(&spec, t, now, &config(1)).expect("due");
        assert_eq!(one.runs, vec![(t + 10_000, true)]);
        assert_eq!(one.skipped, 10);
        assert_eq!(one.following, t + 11_000);
        let three = plan(&spec, t, now, &config(3)).expect("due");
        assert_eq!(
            three.runs,
            vec![(t + 8000, true), (t + 9000, true), (t + 10_000, true)]
        );
        assert_eq!(three.skipped, 8);
        let none = plan(&spec, t, now, &config(0)).expect("due");
        assert_eq!((none.runs.len(), none.skipped), (0, 11));
    }

    #[test]
    fn a_single_tick_found_late_is_a_backfill() {
        let spec = CronSpec::parse("0 3 * * *", "Europe/Berlin").expect("spec");
        let t = utc_ms(2026, 5, 1, 1, 0, 0); // 03:00 CEST
        let p = plan(&spec, t, t + 60_000, &config(1)).expect("due");
        assert_eq!(p.runs, vec![(t, true)]);
        assert_eq!(p.skipped, 0);
        let p = plan(&spec, t, t + 60_000, &config(0)).expect("due");
        assert_eq!((p.runs.len(), p.skipped), (0, 1));
    }

    #[test]
    fn the_clock_through_spring_forward_in_new_york() {
        // A daily 02:30 job, with the clock stepping through 2026-03-08 (02:00 EST → 03:00 EDT).
        let spec = CronSpec::parse("30 2 * * *", "America/New_York").expect("spec");
        assert_eq!(
            run_clock(
                &spec,
                utc_ms(2026, 3, 7, 12, 0, 0),
                utc_ms(2026, 3, 10, 12, 0, 0),
                60_000
            ),
            vec![
                utc_ms(2026, 3, 8, 7, 0, 0),  // 03:00 EDT, the gap's end
                utc_ms(2026, 3, 9, 6, 30, 0), // 02:30 EDT
                utc_ms(2026, 3, 10, 6, 30, 0),
            ]
        );
    }

    /// Steps a clock from `start` to `end` by `step_ms`, running what `plan` says; returns
    /// the ticks run.
    fn run_clock(spec: &CronSpec, start: i64, end: i64, step_ms: i64) -> Vec<i64> {
        let mut next = spec.next_after(start).expect("tick");
        let mut ran = Vec::new();
        let mut now = start;
        while now < end {
            now += step_ms;
            if let Some(p) = plan(spec, next, now, &config(1)) {
                assert_eq!(p.skipped, 0, "nothing missed while the clock runs");
                ran.extend(p.runs.iter().map(|r| r.0));
                next = p.following;
            }
        }
        ran
    }

    #[test]
    fn the_clock_through_fall_back_in_new_york() {
        // A daily 01:30 job on 2026-11-01 (02:00 EDT → 01:00 EST) runs once, in the first pass;
        // an hourly one runs every real hour, twice at 01:00 local.
        let daily = CronSpec::parse("30 1 * * *", "America/New_York").expect("spec");
        assert_eq!(
            run_clock(
                &daily,
                utc_ms(2026, 10, 31, 12, 0, 0),
                utc_ms(2026, 11, 2, 12, 0, 0),
                60_000
            ),
            vec![utc_ms(2026, 11, 1, 5, 30, 0), utc_ms(2026, 11, 2, 6, 30, 0)]
        );
        let hourly = CronSpec::parse("0 * * * *", "America/New_York").expect("spec");
        assert_eq!(
            run_clock(
                &hourly,
                utc_ms(2026, 11, 1, 3, 30, 0),
                utc_ms(2026, 11, 1, 8, 30, 0),
                60_000
            ),
            (4..=8)
                .map(|h| utc_ms(2026, 11, 1, h, 0, 0))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_clock_through_spring_forward_in_berlin() {
        // Every 30 minutes through 2026-03-29 (02:00 CET → 03:00 CEST): the skipped hour has no
        // ticks, and the pace stays one every real half hour. A daily 02:30 runs at 03:00.
        let half = CronSpec::parse("*/30 * * * *", "Europe/Berlin").expect("spec");
        assert_eq!(
            run_clock(
                &half,
                utc_ms(2026, 3, 28, 23, 40, 0),
                utc_ms(2026, 3, 29, 2, 10, 0),
                1000
            ),
            (0..5)
                .map(|i| utc_ms(2026, 3, 29, 0, 0, 0) + i * 1_800_000)
                .collect::<Vec<_>>()
        );
        let daily = CronSpec::parse("30 2 * * *", "Europe/Berlin").expect("spec");
        assert_eq!(
            run_clock(
                &daily,
                utc_ms(2026, 3, 28, 12, 0, 0),
                utc_ms(2026, 3, 30, 12, 0, 0),
                60_000
            ),
            vec![utc_ms(2026, 3, 29, 1, 0, 0), utc_ms(2026, 3, 30, 0, 30, 0)]
        );
    }

    #[test]
    fn the_clock_through_fall_back_in_berlin() {
        // Every 30 minutes, through 2026-10-25 (03:00 CEST → 02:00 CET): 02:00 and 02:30 run
        // twice, an hour apart, as real time passes.
        let spec = CronSpec::parse("*/30 * * * *", "Europe/Berlin").expect("spec");
        assert_eq!(
            run_clock(
                &spec,
                utc_ms(2026, 10, 24, 23, 40, 0),
                utc_ms(2026, 10, 25, 2, 10, 0),
                1000
            ),
            (0..5)
                .map(|i| utc_ms(2026, 10, 25, 0, 0, 0) + i * 1_800_000)
                .collect::<Vec<_>>(),
            "one run every real half hour"
        );
    }
}
