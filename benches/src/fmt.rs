//! `picloud-fmt-bench`: how long the Rhai formatter takes on a 2,000-line script (target:
//! under 20 ms), beside a baseline measured in the same run: Rhai itself compiling the same
//! script, which the formatter must do twice (once to refuse bad input, once to check its own
//! result). Results go to `benches/results/fmt.json` and the `fmt-bench` section of
//! `docs/performance.md`.
//!
//! Run with `scripts/bench-fmt` (release build).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

mod doc;
mod harness;

/// One handler as people write it before formatting: spacing all over the place, long lines,
/// comments. `{i}` makes each copy's names its own (Rhai refuses a function defined twice).
const HANDLER: &str = r#"
/// Handler number {i}: reads a query, computes a total, answers JSON.
fn handle_{i}(req){
    let name=req?.query?.name??"world"; // who is asking
    let items=[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30];
    let total=0;
    for (item,index) in items { total+=item*index; }
    /* a block comment
       over two lines */
    let m=#{name:name,total:total,"quoted key":[1,2,3],nested:#{a:#{b:true}},list:items.len()};
    let chosen=items.filter(|x|x%2==0).map(|x|x*x).reduce(|sum,v|sum+v,0)+helper_{i}(total,name,items);
    if total>100&&name!="nobody"||is_def_var("override_{i}") { m.big=true; } else { m.big=false; }
    switch total%3{
        0=>print("zero"),
        1|2=>{ let r=-total; print(`minus ${r}`); }
        _=>print("never")
    }
    let n=10;
    do { n-=1; } until n<=0;
    try { if n<0 { throw "negative"; } } catch(err) { print(err); }
    let closure=|a,b|a*b+total;
    let s=`hello ${name}, your total is ${total}`;
    #{status:200,headers:#{"content-type":"application/json"},body:m+#{chosen:chosen,s:s,c:closure.call(2,3)}}
}

private fn helper_{i}(total,name,items){
    // only the even ones
    let r=0;
    while r<total { r+=items.len(); if r>1000 { break; } }
    return r+name.len();
}
"#;

fn script(handlers: usize) -> String {
    let mut out = String::from("//! A generated script for the formatter's benchmark.\n");
    for i in 0..handlers {
        out.push_str(&HANDLER.replace("{i}", &i.to_string()));
    }
    out
}

/// The smallest script of whole handlers with at least `lines` lines, as written (`messy`) or
/// already formatted.
fn sized(lines: usize, formatted: bool) -> Result<String> {
    for handlers in 1.. {
        let mut source = script(handlers);
        if formatted {
            source = picloud_rhai_fmt::format(&source).context("the bench script formats")?;
        }
        if source.lines().count() >= lines {
            return Ok(source);
        }
    }
    unreachable!("the loop returns")
}

/// Median and slowest of `runs` timed calls of `f`, after three untimed ones.
fn time(runs: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..3 {
        f();
    }
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[runs / 2], times[runs - 1])
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let engine = picloud_rhai_fmt::engine();
    let runs = 30;
    let mut results = Vec::new();
    for (what, formatted) in [("as written", false), ("already formatted", true)] {
        let source = sized(2_000, formatted)?;
        let out = picloud_rhai_fmt::format(&source).context("the bench script formats")?;
        ensure!(
            picloud_rhai_fmt::format(&out).as_deref() == Ok(out.as_str()),
            "formatting is idempotent"
        );
        let (compile, compile_max) = time(runs, || {
            std::hint::black_box(engine.compile(&source).ok());
        });
        let (fmt, fmt_max) = time(runs, || {
            std::hint::black_box(picloud_rhai_fmt::format(&source).ok());
        });
        results.push(json!({
            "script": what,
            "lines": source.lines().count(),
            "bytes": source.len(),
            "formatted_lines": out.lines().count(),
            "compile_median_ms": ms(compile),
            "compile_max_ms": ms(compile_max),
            "format_median_ms": ms(fmt),
            "format_max_ms": ms(fmt_max),
            "ratio": fmt.as_secs_f64() / compile.as_secs_f64(),
        }));
    }
    let report = json!({
        "machine": harness::machine(),
        "runs": runs,
        "target_ms": 20.0,
        "results": results,
    });
    doc::publish(&root, "fmt", &report, &render(&report))
}

fn render(r: &Value) -> String {
    let m = &r["machine"];
    let mut s = format!(
        "Measured {} on {} ({} cores), release build, median and slowest of {} runs each. \
         Target: a 2,000-line script in under {} ms. The baseline is Rhai compiling the same \
         script; the formatter compiles the input and its own output.\n\n\
         | script | lines (formatted) | bytes | rhai compile ms, median / slowest | format ms, median / slowest | × compile |\n\
         |---|---|---|---|---|---|\n",
        m["date"].as_str().unwrap_or(""),
        m["cpu"].as_str().unwrap_or(""),
        m["cores"],
        r["runs"],
        r["target_ms"],
    );
    for row in r["results"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "| {} | {} ({}) | {} | {} / {} | **{}** / {} | {:.2} |\n",
            row["script"].as_str().unwrap_or(""),
            row["lines"],
            row["formatted_lines"],
            row["bytes"],
            row["compile_median_ms"],
            row["compile_max_ms"],
            row["format_median_ms"],
            row["format_max_ms"],
            row["ratio"].as_f64().unwrap_or(0.0),
        ));
    }
    s
}
