//! When a schedule's ticks fall: a cron expression read in an IANA time zone, with a fixed rule
//! for the hours daylight saving time skips and repeats.
//!
//! # The rule for daylight saving time
//!
//! A schedule is an *interval* schedule when its minute or hour field starts with `*` (`*`,
//! `*/15`, …) or it is `@hourly` (and anything finer); otherwise it runs at *fixed times*
//! (`30 2 * * *`, `@daily`).
//!
//! - **Skipped hour** (spring forward): an interval schedule keeps its pace in real time, so its
//!   ticks inside the gap do not happen (`*/15 * * * *` goes 01:45 → 03:00, fifteen real
//!   minutes). A fixed-time tick inside the gap runs once, at the first instant after the gap
//!   (a daily `30 2 * * *` runs at 03:00 on that day, not never); several such ticks collapse
//!   into that one run.
//! - **Repeated hour** (fall back): an interval schedule runs in both passes (an hourly job runs
//!   every real hour); a fixed-time tick runs once, in the first pass.
//!
//! This is what cron(8) (cronie) and Cronos do. Instants are Unix milliseconds throughout.

use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

/// Why an expression or a time zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("invalid cron expression {expr:?}: {reason}")]
    Cron { expr: String, reason: String },
    #[error("unknown time zone {0:?}: use an IANA name such as \"UTC\" or \"Europe/Berlin\"")]
    TimeZone(String),
    #[error("the cron expression {0:?} never fires")]
    Never(String),
}

/// A parsed schedule: what to run when.
#[derive(Debug, Clone)]
pub struct CronSpec {
    /// One schedule, or two when both the day of month and the day of week are restricted:
    /// cron(5) then runs on a day matching *either* (the `cron` crate would need both), so
    /// each is a schedule of its own and the ticks are their union.
    schedules: Vec<cron::Schedule>,
    tz: Tz,
    interval: bool,
    /// Its seconds field names more than one second: it fires more than once a minute.
    sub_minute: bool,
}

/// One field of a cron expression: its name in messages, its range and its names.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names standing for `min`, `min + 1`, … (three letters, any case).
    names: &'static [&'static str],
    /// The day of week, which the `cron` crate numbers from Sunday = 1.
    weekday: bool,
}

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
    weekday: false,
};
const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
    weekday: false,
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    weekday: false,
};
const DAY_OF_MONTH: Field = Field {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
    weekday: false,
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
    weekday: false,
};
/// cron(5)'s day of week: 0 and 7 are Sunday, 1 Monday, … 6 Saturday.
const DAY_OF_WEEK: Field = Field {
    name: "day of week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    weekday: true,
};

/// The aliases cron(5) knows, as the five fields they stand for.
const ALIASES: [(&str, &str); 7] = [
    ("yearly", "0 0 1 1 *"),
    ("annually", "0 0 1 1 *"),
    ("monthly", "0 0 1 * *"),
    ("weekly", "0 0 * * 0"),
    ("daily", "0 0 * * *"),
    ("midnight", "0 0 * * *"),
    ("hourly", "0 * * * *"),
];

impl Field {
    /// The values `text` names, sorted, or why it names none: a comma-separated list of `*`,
    /// `N`, `A-B`, each optionally `/STEP` (cron(5)'s grammar; `?` is `*`).
    fn values(&self, text: &str) -> Result<Vec<u32>, String> {
        let mut values = Vec::new();
        for part in text.split(',') {
            let (base, step) = match part.split_once('/') {
                Some((base, step)) => {
                    let step: u32 = step.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!(
                            "{} {part:?}: the step after '/' must be a whole number from 1",
                            self.name
                        )
                    })?;
                    (base, Some(step))
                }
                None => (part, None),
            };
            let (from, to) = match base {
                "*" | "?" => (self.min, self.max),
                _ => match base.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (self.value(a)?, self.value(b)?);
                        if a > b {
                            return Err(format!(
                                "{} range {base:?} runs backwards: write the smaller end first",
                                self.name
                            ));
                        }
                        (a, b)
                    }
                    // `N/STEP` runs from N to the end of the range.
                    None => {
                        let a = self.value(base)?;
                        (a, if step.is_some() { self.max } else { a })
                    }
                },
            };
            values.extend((from..=to).step_by(step.unwrap_or(1) as usize));
        }
        values.sort_unstable();
        values.dedup();
        Ok(values)
    }

    fn value(&self, text: &str) -> Result<u32, String> {
        if let Some(i) = self.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
            return Ok(self.min + i as u32);
        }
        let range = format!("{}–{}", self.min, self.max);
        let names = match self.names {
            [] => String::new(),
            names => format!(" or a name ({}–{})", names[0], names[names.len() - 1]),
        };
        match text.parse::<u32>() {
            Ok(v) if (self.min..=self.max).contains(&v) => Ok(v),
            Ok(v) => Err(format!(
                "{} {v} is out of range: use {range}{names}",
                self.name
            )),
            Err(_) if text.is_empty() => Err(format!(
                "{} has an empty value: use {range}{names}",
                self.name
            )),
            Err(_) => Err(format!(
                "{} {text:?} is not a number: use {range}{names}",
                self.name
            )),
        }
    }

    /// `text` in the `cron` crate's terms: `*` kept, anything else its values listed (days of
    /// week renumbered: the crate counts Sunday as 1 … Saturday as 7).
    fn for_crate(&self, text: &str) -> Result<String, String> {
        if text == "*" || text == "?" {
            return Ok("*".to_string());
        }
        let mut values = self.values(text)?;
        if self.weekday {
            values = values.into_iter().map(|v| v % 7 + 1).collect();
            values.sort_unstable();
            values.dedup();
        }
        Ok(values
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","))
    }
}

/// Whether a day field restricts the days (cron(5): it does not start with `*`).
fn restricted(text: &str) -> bool {
    !(text.starts_with('*') || text == "?")
}

/// The largest shift of a UTC offset at one transition we allow for (real ones are at most
/// two hours).
const MAX_SHIFT_SECONDS: i64 = 3 * 3600;
/// Naive candidates examined for one tick before giving up (the cron crate itself skips
/// impossible dates; this only bounds the work near transitions).
const MAX_CANDIDATES: usize = 100_000;
/// Ticks [`CronSpec::ticks_between`] counts one by one; past these it estimates.
pub const MAX_COUNTED: u64 = 10_000;

impl CronSpec {
    /// Reads `expr` in the time zone `tz`, as cron(5) does.
    ///
    /// `expr` has five fields (minute hour day-of-month month day-of-week, as in crontab), six
    /// (seconds first) or seven (and a year last), or is one of cron(5)'s aliases (`@yearly`,
    /// `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`). A day of week is
    /// 0–7 (0 and 7 Sunday) or a name (`mon`); months are 1–12 or names (`jan`); each field
    /// takes lists, ranges and steps (`1-5`, `*/15`, `mon,wed,fri`). When both day fields are
    /// restricted, a day matching either runs.
    ///
    /// # Errors
    ///
    /// When the expression does not parse, names no possible time, or the zone is unknown;
    /// the message names the field and the range it takes.
    pub fn parse(expr: &str, tz: &str) -> Result<Self, SpecError> {
        let tz = Tz::from_str(tz).map_err(|_| SpecError::TimeZone(tz.to_string()))?;
        let refuse = |reason: String| SpecError::Cron {
            expr: expr.to_string(),
            reason,
        };
        let trimmed = expr.trim();
        let expanded;
        let text = match trimmed.strip_prefix('@') {
            Some("reboot") => {
                return Err(refuse(
                    "@reboot runs when a machine starts, which a schedule has no notion of: \
                     give a time (for example @daily)"
                        .to_string(),
                ));
            }
            Some(name) => {
                let Some((_, fields)) = ALIASES
                    .iter()
                    .find(|(alias, _)| alias.eq_ignore_ascii_case(name))
                else {
                    return Err(refuse(format!(
                        "unknown alias @{name}: use one of {}",
                        ALIASES
                            .iter()
                            .map(|(a, _)| format!("@{a}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                };
                expanded = (*fields).to_string();
                expanded.as_str()
            }
            None => trimmed,
        };
        let fields: Vec<&str> = text.split_whitespace().collect();
        let (second, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 | 7 => (fields[0], &fields[1..]),
            n => {
                return Err(refuse(format!(
                    "{n} fields; expected 5 (minute hour day-of-month month day-of-week), 6 \
                     (seconds first) or 7 (and a year last)"
                )));
            }
        };
        let interval = rest[0].starts_with('*') || rest[1].starts_with('*');
        let minute = MINUTE.for_crate(rest[0]).map_err(&refuse)?;
        let hour = HOUR.for_crate(rest[1]).map_err(&refuse)?;
        let day = DAY_OF_MONTH.for_crate(rest[2]).map_err(&refuse)?;
        let month = MONTH.for_crate(rest[3]).map_err(&refuse)?;
        let weekday = DAY_OF_WEEK.for_crate(rest[4]).map_err(&refuse)?;
        let sub_minute = SECOND.values(second).map_err(&refuse)?.len() > 1;
        let second = SECOND.for_crate(second).map_err(&refuse)?;
        let year = rest.get(5).copied().unwrap_or("*");
        let build = |day: &str, weekday: &str| {
            cron::Schedule::from_str(&format!(
                "{second} {minute} {hour} {day} {month} {weekday} {year}"
            ))
            .map_err(|e| refuse(format!("{e} (in the year field {year:?}?)")))
        };
        let schedules = if restricted(rest[2]) && restricted(rest[4]) {
            vec![build(&day, "*")?, build("*", &weekday)?]
        } else {
            vec![build(&day, &weekday)?]
        };
        let spec = Self {
            schedules,
            tz,
            interval,
            sub_minute,
        };
        // A far-future instant still inside chrono's range; an expression such as
        // `0 0 0 30 2 *` (30 February) has no tick at all.
        if spec.next_after(0).is_none() {
            return Err(SpecError::Never(expr.to_string()));
        }
        Ok(spec)
    }

    /// The time zone's name.
    pub fn time_zone(&self) -> &'static str {
        self.tz.name()
    }

    /// Whether the schedule keeps real-time pace across daylight saving changes (see the
    /// module's rule).
    pub fn is_interval(&self) -> bool {
        self.interval
    }

    /// Whether it fires more than once in some minute (its seconds field names several
    /// seconds): what a tenant may do only when an admin allowed it.
    pub fn is_sub_minute(&self) -> bool {
        self.sub_minute
    }

    /// The first tick strictly after `now` (Unix ms); `None` when there is none.
    pub fn next_after(&self, now: i64) -> Option<i64> {
        self.schedules
            .iter()
            .filter_map(|s| self.next_in(s, now))
            .min()
    }

    /// The last tick strictly before `before` (Unix ms); `None` when there is none. The mirror
    /// of [`Self::next_after`], walking the schedule's local times backwards.
    pub fn prev_before(&self, before: i64) -> Option<i64> {
        self.schedules
            .iter()
            .filter_map(|s| self.prev_in(s, before))
            .max()
    }

    fn next_in(&self, schedule: &cron::Schedule, now: i64) -> Option<i64> {
        let now_local = self.local(now)?;
        // If the offset drops soon (a repeated hour ahead), local times just before `now_local`
        // come again after `now`: start the search that much earlier.
        let drop = (self.offset(now)? - self.offset(now + MAX_SHIFT_SECONDS * 1000)?).max(0);
        let start = now_local - Duration::seconds(drop) - Duration::seconds(1);
        let mut best: Option<(i64, NaiveDateTime, i64)> = None;
        for (n, candidate) in schedule.after(&start.and_utc()).enumerate() {
            if n >= MAX_CANDIDATES {
                break;
            }
            let naive = candidate.naive_utc();
            if let Some((_, best_naive, reach)) = best
                && naive > best_naive + Duration::seconds(reach)
            {
                break;
            }
            for t in self.instants(naive) {
                if t > now && best.is_none_or(|(b, _, _)| t < b) {
                    best = Some((t, naive, self.reach(t)?));
                }
            }
        }
        best.map(|(t, _, _)| t)
    }

    fn prev_in(&self, schedule: &cron::Schedule, before: i64) -> Option<i64> {
        let local = self.local(before)?;
        // Local times up to the largest shift after `before_local` can stand for earlier
        // instants (a repeated hour): start the search that much later.
        let start = local + Duration::seconds(MAX_SHIFT_SECONDS) + Duration::seconds(1);
        let mut best: Option<(i64, NaiveDateTime)> = None;
        for (n, candidate) in schedule.after(&start.and_utc()).rev().enumerate() {
            if n >= MAX_CANDIDATES {
                break;
            }
            let naive = candidate.naive_utc();
            if let Some((_, best_naive)) = best
                && naive < best_naive - Duration::seconds(2 * MAX_SHIFT_SECONDS)
            {
                break;
            }
            for t in self.instants(naive) {
                if t < before && best.is_none_or(|(b, _)| t > b) {
                    best = Some((t, naive));
                }
            }
        }
        best.map(|(t, _)| t)
    }

    /// The ticks in `[from, until]`: how many, and the last `keep` of them (oldest first).
    ///
    /// The last ones are found walking back from `until`, never through the whole range; the
    /// count walks at most [`MAX_COUNTED`] ticks and past that is estimated from their rate
    /// (a schedule every second, down for a month, is 2.6 million ticks: counting them one by
    /// one would hold the scheduler for minutes).
    pub fn ticks_between(&self, from: i64, until: i64, keep: usize) -> (u64, Vec<i64>) {
        let mut last = Vec::with_capacity(keep);
        let mut cursor = until.saturating_add(1);
        while last.len() < keep {
            match self.prev_before(cursor) {
                Some(t) if t >= from => {
                    last.push(t);
                    cursor = t;
                }
                _ => break,
            }
        }
        last.reverse();
        let mut count = 0u64;
        let Some(mut t) = self.next_after(from - 1) else {
            return (0, last);
        };
        let first = t;
        while t <= until {
            count += 1;
            if count >= MAX_COUNTED {
                // The rate of the ticks counted, over the rest of the range.
                let span = (t - first).max(1) as f64;
                let rest = (until - t) as f64;
                let estimate = (rest * (count - 1) as f64 / span) as u64;
                return (count + estimate, last);
            }
            match self.next_after(t) {
                Some(next) => t = next,
                None => break,
            }
        }
        (count.max(last.len() as u64), last)
    }

    /// The instants a matching local time stands for, by the module's rule.
    fn instants(&self, naive: NaiveDateTime) -> Vec<i64> {
        match self.tz.from_local_datetime(&naive) {
            LocalResult::Single(t) => vec![t.timestamp_millis()],
            LocalResult::Ambiguous(first, second) => {
                if self.interval {
                    vec![first.timestamp_millis(), second.timestamp_millis()]
                } else {
                    vec![first.timestamp_millis()]
                }
            }
            LocalResult::None => {
                if self.interval {
                    Vec::new()
                } else {
                    self.gap_end(naive).into_iter().collect()
                }
            }
        }
    }

    /// The first instant whose local time is past `naive`, a local time the clock skipped.
    fn gap_end(&self, naive: NaiveDateTime) -> Option<i64> {
        // Before the gap, `naive` read at the old offset is an instant after the jump; search
        // down to the jump at one-second resolution.
        let mut lo = (naive - Duration::seconds(MAX_SHIFT_SECONDS))
            .and_utc()
            .timestamp()
            - 86_400;
        let mut hi = (naive + Duration::seconds(MAX_SHIFT_SECONDS))
            .and_utc()
            .timestamp()
            + 86_400;
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.local(mid * 1000)? > naive {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(hi * 1000)
    }

    /// How far (seconds of naive local time) past a tick at `t` a later local time can still
    /// stand for an earlier instant: the offset's drop around `t`, 0 away from transitions.
    fn reach(&self, t: i64) -> Option<i64> {
        let here = self.offset(t)?;
        let around = self
            .offset(t - MAX_SHIFT_SECONDS * 1000)?
            .max(self.offset(t + MAX_SHIFT_SECONDS * 1000)?);
        Some((around - here).max(0))
    }

    fn local(&self, t: i64) -> Option<NaiveDateTime> {
        Some(self.tz.timestamp_millis_opt(t).single()?.naive_local())
    }

    /// The UTC offset at `t`, in seconds.
    fn offset(&self, t: i64) -> Option<i64> {
        let at: DateTime<Tz> = self.tz.timestamp_millis_opt(t).single()?;
        Some(i64::from(at.offset().fix().local_minus_utc()))
    }
}

/// The `next_run_at` a schedule stored before days of week were cron(5)'s (migration 10)
/// takes now: `None` when it keeps its own (its day of week is not restricted by a number,
/// or it no longer parses, which the scheduler then reports). The first tick from the earlier
/// of its old `next_run_at` and `now`, so that a tick already due stays due.
pub fn recheck_weekdays(cron: &str, time_zone: &str, next_run_at: i64, now: i64) -> Option<i64> {
    let fields: Vec<&str> = cron.split_whitespace().collect();
    let weekday = match fields.len() {
        5 => fields[4],
        6 | 7 => fields[5],
        _ => return None, // an alias: @weekly was Sunday under both readings
    };
    if !restricted(weekday) || !weekday.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    let spec = CronSpec::parse(cron, time_zone).ok()?;
    spec.next_after(next_run_at.min(now) - 1)
        .or(Some(i64::MAX))
        .filter(|next| *next != next_run_at)
}

/// Unix ms of a UTC date, for tests and docs.
pub fn utc_ms(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .map_or(0, |t| t.timestamp_millis())
}

/// The argument of `on_schedule(event)`.
#[derive(Debug, Serialize)]
struct Event<'a> {
    schedule: i64,
    /// The tick, Unix ms.
    scheduled_at: i64,
    /// When the run started, Unix ms.
    fired_at: i64,
    payload: &'a serde_json::Value,
    backfill: bool,
}

/// `on_schedule`'s argument as the guest takes it (JSON text).
pub fn event_json(
    schedule: i64,
    scheduled_at: i64,
    fired_at: i64,
    payload: &serde_json::Value,
    backfill: bool,
) -> String {
    serde_json::to_string(&Event {
        schedule,
        scheduled_at,
        fired_at,
        payload,
        backfill,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks(spec: &CronSpec, from: i64, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut t = from;
        for _ in 0..n {
            t = spec.next_after(t).expect("a tick");
            let local = spec.tz.timestamp_millis_opt(t).single().expect("valid");
            out.push(local.format("%m-%d %H:%M:%S %Z").to_string());
        }
        out
    }

    /// Walking back gives the same ticks as walking forward, across daylight saving changes in
    /// both directions.
    #[test]
    fn prev_before_mirrors_next_after() {
        for (expr, tz, from) in [
            (
                "0 30 2 * * *",
                "Europe/Berlin",
                utc_ms(2026, 3, 25, 0, 0, 0),
            ),
            (
                "0 30 2 * * *",
                "Europe/Berlin",
                utc_ms(2026, 10, 20, 0, 0, 0),
            ),
            (
                "0 */20 * * * *",
                "America/New_York",
                utc_ms(2026, 3, 7, 0, 0, 0),
            ),
            (
                "0 */20 * * * *",
                "America/New_York",
                utc_ms(2026, 10, 31, 0, 0, 0),
            ),
            ("*/7 * * * * *", "UTC", utc_ms(2026, 1, 1, 0, 0, 0)),
        ] {
            let s = spec(expr, tz);
            let mut forward = vec![s.next_after(from).expect("a tick")];
            for _ in 0..200 {
                let last = *forward.last().expect("one");
                forward.push(s.next_after(last).expect("a tick"));
            }
            for pair in forward.windows(2) {
                assert_eq!(
                    s.prev_before(pair[1]),
                    Some(pair[0]),
                    "{expr} in {tz}: before {}",
                    pair[1]
                );
            }
        }
    }

    /// A month of an every-second schedule: the last ticks exact, the count estimated within
    /// a hundredth, without walking 2.6 million ticks.
    #[test]
    fn a_long_downtime_is_counted_without_walking_it() {
        let s = spec("* * * * * *", "UTC");
        let from = utc_ms(2026, 1, 1, 0, 0, 0);
        let until = utc_ms(2026, 1, 31, 0, 0, 0);
        let (count, last) = s.ticks_between(from, until, 3);
        assert_eq!(last, vec![until - 2000, until - 1000, until]);
        let exact = (until - from) / 1000 + 1;
        assert!(
            (count as i64 - exact).abs() <= exact / 100,
            "{count} of {exact}"
        );
        // Below the walking limit the count is exact.
        let (count, last) = s.ticks_between(from, from + 60_000, 2);
        assert_eq!((count, last), (61, vec![from + 59_000, from + 60_000]));
    }

    fn spec(expr: &str, tz: &str) -> CronSpec {
        CronSpec::parse(expr, tz).expect("valid spec")
    }

    #[test]
    fn five_six_and_seven_fields_parse_and_nonsense_is_refused() {
        assert!(CronSpec::parse("*/5 * * * *", "UTC").is_ok());
        assert!(CronSpec::parse("*/5 * * * * *", "UTC").is_ok());
        assert!(CronSpec::parse("0 0 12 * * * 2030", "UTC").is_ok());
        assert!(CronSpec::parse("@daily", "Europe/Berlin").is_ok());
        let e = CronSpec::parse("61 * * * *", "UTC").expect_err("minute 61");
        assert!(e.to_string().contains("invalid cron expression"), "{e}");
        let e = CronSpec::parse("* * *", "UTC").expect_err("three fields");
        assert!(e.to_string().contains("3 fields"), "{e}");
        let e = CronSpec::parse("* * * * *", "Mars/Olympus").expect_err("zone");
        assert!(e.to_string().contains("unknown time zone"), "{e}");
        let e = CronSpec::parse("0 0 0 30 2 *", "UTC").expect_err("30 February");
        assert!(e.to_string().contains("never fires"), "{e}");
    }

    /// cron(5)'s days of week: 0 and 7 Sunday, 1 Monday … 6 Saturday, and their names; from
    /// Saturday 3 January 2026, noon UTC, each names the next such day.
    #[test]
    fn each_weekday_is_crons() {
        let saturday = utc_ms(2026, 1, 3, 12, 0, 0);
        let days = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
        for n in 0..=7u32 {
            let day = (n % 7) as usize;
            // Sunday the 4th is day 0; Saturday is the 10th (the 3rd's noon has passed).
            let expected = utc_ms(2026, 1, 4 + day as u32, 0, 0, 0);
            for expr in [format!("0 0 * * {n}"), format!("0 0 * * {}", days[day])] {
                assert_eq!(
                    spec(&expr, "UTC").next_after(saturday),
                    Some(expected),
                    "{expr}"
                );
            }
            let upper = format!("0 0 * * {}", days[day].to_uppercase());
            assert_eq!(spec(&upper, "UTC").next_after(saturday), Some(expected));
        }
        // Weekdays are Monday to Friday, and a range may end on 7 (Sunday).
        let weekdays = spec("0 9 * * 1-5", "UTC");
        let mut t = saturday;
        let mut seen = Vec::new();
        for _ in 0..6 {
            t = weekdays.next_after(t).expect("a tick");
            seen.push(t);
        }
        let at_nine = |d| utc_ms(2026, 1, d, 9, 0, 0);
        assert_eq!(seen, [5, 6, 7, 8, 9, 12].map(at_nine));
        let weekend = spec("0 9 * * 6-7", "UTC");
        assert_eq!(weekend.next_after(at_nine(4)), Some(at_nine(10)));
        assert_eq!(weekend.next_after(at_nine(10)), Some(at_nine(11)));
        let named = spec("0 9 * * Mon-Fri", "UTC");
        assert_eq!(named.next_after(saturday), Some(at_nine(5)));
        // Steps count from Sunday: `*/2` is Sunday, Tuesday, Thursday, Saturday.
        let every_other = spec("0 9 * * */2", "UTC");
        assert_eq!(every_other.next_after(saturday), Some(at_nine(4)));
        assert_eq!(every_other.next_after(at_nine(4)), Some(at_nine(6)));
        // Both day fields restricted: a day matching either runs (the 13th, or a Friday).
        let either = spec("0 0 13 * 5", "UTC");
        let mut t = saturday;
        let mut seen = Vec::new();
        for _ in 0..4 {
            t = either.next_after(t).expect("a tick");
            seen.push(t);
        }
        let midnight = |d| utc_ms(2026, 1, d, 0, 0, 0);
        assert_eq!(seen, [9, 13, 16, 23].map(midnight));
        assert_eq!(either.prev_before(midnight(16)), Some(midnight(13)));
    }

    /// Each alias is the five fields cron(5) gives it, across a daylight saving change too.
    #[test]
    fn each_alias_is_crons() {
        let from = utc_ms(2026, 3, 28, 12, 0, 0); // a Saturday, the eve of Berlin's spring
        for (alias, next) in [
            ("@yearly", "01-01 00:00:00 CET"),
            ("@annually", "01-01 00:00:00 CET"),
            ("@monthly", "04-01 00:00:00 CEST"),
            ("@weekly", "03-29 00:00:00 CET"),
            ("@daily", "03-29 00:00:00 CET"),
            ("@midnight", "03-29 00:00:00 CET"),
            ("@hourly", "03-28 14:00:00 CET"),
            ("@DAILY", "03-29 00:00:00 CET"),
        ] {
            assert_eq!(
                ticks(&spec(alias, "Europe/Berlin"), from, 1),
                [next],
                "{alias}"
            );
        }
        // @hourly keeps real-time pace through the skipped hour.
        let hourly = spec("@hourly", "Europe/Berlin");
        assert_eq!(
            ticks(&hourly, utc_ms(2026, 3, 29, 0, 30, 0), 2),
            ["03-29 03:00:00 CEST", "03-29 04:00:00 CEST"]
        );
    }

    /// A refused expression says which field is wrong and what it takes, in the user's terms.
    #[test]
    fn errors_name_the_field_and_its_range() {
        for (expr, says) in [
            ("61 * * * *", "minute 61 is out of range: use 0–59"),
            ("0 24 * * *", "hour 24 is out of range: use 0–23"),
            ("0 0 0 * *", "day of month 0 is out of range: use 1–31"),
            (
                "0 0 * 13 *",
                "month 13 is out of range: use 1–12 or a name (jan–dec)",
            ),
            (
                "0 0 * * 8",
                "day of week 8 is out of range: use 0–7 or a name (sun–sat)",
            ),
            ("0 0 * * fr", "day of week \"fr\" is not a number"),
            ("0 0 * * 5-1", "runs backwards"),
            (
                "*/0 * * * *",
                "the step after '/' must be a whole number from 1",
            ),
            ("@reboot", "@reboot runs when a machine starts"),
            (
                "@fortnightly",
                "unknown alias @fortnightly: use one of @yearly",
            ),
            ("* * *", "3 fields; expected 5"),
        ] {
            let e = CronSpec::parse(expr, "UTC").expect_err(expr).to_string();
            assert!(e.contains(says), "{expr}: {e}");
        }
        // 59 and 23 are valid, and the message shows only what the user wrote.
        assert!(CronSpec::parse("59 23 * * *", "UTC").is_ok());
        let e = CronSpec::parse("61 * * * *", "UTC")
            .expect_err("61")
            .to_string();
        assert!(
            e.starts_with("invalid cron expression \"61 * * * *\""),
            "{e}"
        );
    }

    /// Whatever a tenant sends as an expression is refused with a message, never a panic: NUL
    /// and control bytes, other scripts' digits, huge lists, ranges and steps, empty parts.
    #[test]
    fn hostile_expressions_are_refused_not_panicked_on() {
        let long_list = format!("{} * * * *", vec!["1"; 100_000].join(","));
        let hostile = [
            "\0 * * * *",
            "* * * * \u{7}",
            "١ * * * *",
            "* * * * mon\0",
            "-5 * * * *",
            "5- * * * *",
            ",, * * * *",
            "*/ * * * *",
            "99999999999999999999 * * * *",
            "1-59/0 * * * *",
            "@",
            "@\0",
            "",
            "     ",
        ];
        for expr in hostile {
            assert!(
                CronSpec::parse(expr, "UTC").is_err(),
                "{expr:?} was accepted"
            );
        }
        // Large but valid: a long list of one minute, a huge step that leaves one value.
        assert!(CronSpec::parse(&long_list, "UTC").is_ok());
        assert!(CronSpec::parse("0/4294967295 * * * *", "UTC").is_ok());
        assert!(CronSpec::parse("*/4294967295 * * * *", "UTC").is_ok());
        assert!(CronSpec::parse(&"x".repeat(1 << 20), "UTC").is_err());
    }

    #[test]
    fn every_second_in_utc() {
        let s = spec("* * * * * *", "UTC");
        let t0 = utc_ms(2026, 1, 1, 0, 0, 0);
        assert_eq!(s.next_after(t0), Some(t0 + 1000));
        assert_eq!(s.next_after(t0 + 1), Some(t0 + 1000));
        assert_eq!(
            s.ticks_between(t0, t0 + 9_999, 2),
            (10, vec![t0 + 8000, t0 + 9000])
        );
    }

    // 2026-03-08: New York springs forward at 02:00 EST → 03:00 EDT (07:00 UTC).
    // 2026-11-01: New York falls back at 02:00 EDT → 01:00 EST (06:00 UTC).
    // 2026-03-29: Berlin springs forward at 02:00 CET → 03:00 CEST (01:00 UTC).
    // 2026-10-25: Berlin falls back at 03:00 CEST → 02:00 CET (01:00 UTC).

    #[test]
    fn new_york_spring_forward() {
        let daily = spec("30 2 * * *", "America/New_York");
        let before = utc_ms(2026, 3, 7, 12, 0, 0);
        assert_eq!(
            ticks(&daily, before, 3),
            [
                "03-08 03:00:00 EDT",
                "03-09 02:30:00 EDT",
                "03-10 02:30:00 EDT"
            ],
            "the skipped 02:30 runs once, when the gap ends"
        );
        let quarter = spec("*/15 * * * *", "America/New_York");
        assert_eq!(
            ticks(&quarter, utc_ms(2026, 3, 8, 6, 40, 0), 3),
            [
                "03-08 01:45:00 EST",
                "03-08 03:00:00 EDT",
                "03-08 03:15:00 EDT"
            ],
            "an interval schedule keeps real-time pace"
        );
        // Several fixed ticks inside the gap collapse into one run.
        let many = spec("0 0,20,40 2 * * *", "America/New_York");
        assert_eq!(
            ticks(&many, before, 2),
            ["03-08 03:00:00 EDT", "03-09 02:00:00 EDT"]
        );
    }

    #[test]
    fn new_york_fall_back() {
        let daily = spec("30 1 * * *", "America/New_York");
        assert_eq!(
            ticks(&daily, utc_ms(2026, 10, 31, 12, 0, 0), 2),
            ["11-01 01:30:00 EDT", "11-02 01:30:00 EST"],
            "the repeated 01:30 runs once, in the first pass"
        );
        let hourly = spec("0 * * * *", "America/New_York");
        assert_eq!(
            ticks(&hourly, utc_ms(2026, 11, 1, 4, 30, 0), 4),
            [
                "11-01 01:00:00 EDT",
                "11-01 01:00:00 EST",
                "11-01 02:00:00 EST",
                "11-01 03:00:00 EST"
            ],
            "an hourly schedule runs every real hour"
        );
        // From inside the first pass, the second pass is still ahead.
        let quarter = spec("*/15 * * * *", "America/New_York");
        assert_eq!(
            ticks(&quarter, utc_ms(2026, 11, 1, 5, 50, 0), 3),
            [
                "11-01 01:00:00 EST",
                "11-01 01:15:00 EST",
                "11-01 01:30:00 EST"
            ]
        );
        // From inside the second pass, a fixed tick of the first pass is not run again.
        assert_eq!(
            ticks(&daily, utc_ms(2026, 11, 1, 6, 10, 0), 1),
            ["11-02 01:30:00 EST"]
        );
    }

    #[test]
    fn berlin_spring_forward_and_fall_back() {
        let daily = spec("0 30 2 * * *", "Europe/Berlin");
        assert_eq!(
            ticks(&daily, utc_ms(2026, 3, 28, 12, 0, 0), 2),
            ["03-29 03:00:00 CEST", "03-30 02:30:00 CEST"]
        );
        assert_eq!(
            ticks(&daily, utc_ms(2026, 10, 24, 12, 0, 0), 2),
            ["10-25 02:30:00 CEST", "10-26 02:30:00 CET"]
        );
        let half = spec("*/30 * * * *", "Europe/Berlin");
        assert_eq!(
            ticks(&half, utc_ms(2026, 10, 24, 23, 50, 0), 6),
            [
                "10-25 02:00:00 CEST",
                "10-25 02:30:00 CEST",
                "10-25 02:00:00 CET",
                "10-25 02:30:00 CET",
                "10-25 03:00:00 CET",
                "10-25 03:30:00 CET"
            ]
        );
        assert_eq!(
            ticks(&half, utc_ms(2026, 3, 29, 0, 10, 0), 3),
            [
                "03-29 01:30:00 CET",
                "03-29 03:00:00 CEST",
                "03-29 03:30:00 CEST"
            ]
        );
    }
}
