//! `rustmq-etl bench`: the throughput and latency of a configuration on the
//! user's own messages, and where the time goes, pipeline by pipeline, stage
//! by stage, module by module.
//!
//! Four phases, all on the real engine: a warm-up pass; traced passes (at
//! least [`TRACED`] messages) for the breakdown; the throughput phase, in which
//! several callers send batches as fast as the engine answers; and the latency
//! phase, one caller sending one message at a time.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustmq_etl_core::{Engine as _, Message};
use rustmq_etl_orchestrator::ProcessOptions;

use crate::summary::{quantile, show, Summary};
use crate::{load_plan, start};

/// At least this many messages are traced for the breakdown.
const TRACED: usize = 2_000;

pub(crate) struct Args {
    pub config: PathBuf,
    pub input: PathBuf,
    pub modules: Option<PathBuf>,
    pub seconds: f64,
    pub batch: usize,
    pub callers: Option<usize>,
    /// The engine's settings from the command line.
    pub settings: crate::Settings,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some((config, _, _)) = load_plan(&args.config) else {
        return Ok(ExitCode::FAILURE);
    };
    let (messages, bad) = read_messages(&args.input)?;
    if messages.is_empty() {
        anyhow::bail!("{}: no messages to run", args.input.display());
    }
    let modules = args
        .modules
        .clone()
        .unwrap_or_else(crate::run::default_modules);
    let settings = crate::Settings {
        // For the one-message phase on this thread.
        caller_threads: 1,
        ..args.settings.clone()
    };
    let Some(etl) = start(&config, &modules, &settings)? else {
        return Ok(ExitCode::FAILURE);
    };
    let threads = etl.engine().threads();
    let callers = args.callers.unwrap_or(threads * 2).max(1);
    let mut out = crate::Stdout::lock();
    writeln!(
        out,
        "rustmq-etl bench: {} on {} message{} of {}; {threads} engine thread{}",
        args.config.display(),
        messages.len(),
        crate::plural(messages.len()),
        args.input.display(),
        crate::plural(threads),
    )?;

    let untraced = ProcessOptions::default();
    let run = |batch: Vec<Message>, options| {
        etl.process_batch_blocking(batch, options)
            .context("the engine stopped")
    };
    // Warm-up: every module's first instances, caches, branch predictors.
    for chunk in messages.chunks(args.batch) {
        run(chunk.to_vec(), untraced)?;
    }

    // The breakdown, from traced passes.
    let mut summary = Summary::default();
    let mut traced = 0;
    let tracing = Instant::now();
    while traced < TRACED {
        for chunk in messages.chunks(args.batch) {
            // Counts only: no texts of why a module was not selected.
            let counting = ProcessOptions::default().trace(true).skip_reasons(false);
            for processed in run(chunk.to_vec(), counting)? {
                summary.add(&processed);
            }
        }
        traced += messages.len();
    }
    let traced_wall = tracing.elapsed();

    // Throughput: `callers` threads, each sending batches in turn over the
    // messages until the time is up.
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let started = Instant::now();
    let batch_times: Vec<Duration> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..callers)
            .map(|caller| {
                let (stop, done, messages, run) = (&stop, &done, &messages, &run);
                scope.spawn(move || -> anyhow::Result<Vec<Duration>> {
                    let mut times = Vec::new();
                    let mut at = caller * args.batch % messages.len();
                    while !stop.load(Ordering::Relaxed) {
                        let batch: Vec<Message> = messages
                            .iter()
                            .cycle()
                            .skip(at)
                            .take(args.batch)
                            .cloned()
                            .collect();
                        at = (at + args.batch) % messages.len();
                        let sent = Instant::now();
                        run(batch, untraced)?;
                        times.push(sent.elapsed());
                        done.fetch_add(args.batch as u64, Ordering::Relaxed);
                    }
                    Ok(times)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(args.seconds));
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for worker in workers {
            match worker.join() {
                Ok(times) => all.extend(times?),
                Err(_) => anyhow::bail!("a caller thread panicked"),
            }
        }
        Ok(all)
    })?;
    let elapsed = started.elapsed();
    let sent = done.load(Ordering::Relaxed);
    writeln!(
        out,
        "throughput   {:>12} messages/s   ({sent} messages in {elapsed:.2?}; {callers} callers, batches of {})",
        thousands(sent as f64 / elapsed.as_secs_f64()),
        args.batch
    )?;
    // Failing modules make messages cheaper, not the pipelines faster: say so
    // beside the figure, from the traced passes.
    let failed: u64 = summary
        .modules
        .iter()
        .flat_map(|(_, m)| m.failed.values())
        .sum();
    if failed > 0 {
        let refused: u64 = summary
            .modules
            .iter()
            .filter_map(|(_, m)| m.failed.get("circuit_open"))
            .sum();
        writeln!(
            out,
            "note         {failed} module failure{} in the {traced} traced messages ({refused} refused by an \
             open circuit breaker, {} dead-lettered): the figures include them; see the table below",
            crate::plural(failed as usize),
            summary.dead_lettered
        )?;
    }
    let mut batch_times = batch_times;
    writeln!(
        out,
        "batch        p50 {:>10}   p99 {:>10}   max {:>10}   (a batch of {}, under full load)",
        show(quantile(&mut batch_times, 0.5)),
        show(quantile(&mut batch_times, 0.99)),
        show(quantile(&mut batch_times, 1.0)),
        args.batch
    )?;

    // Latency: one message at a time from one caller, through the engine's
    // threads, then on the caller's own.
    let one_at_a_time = |run: &mut dyn FnMut(Message) -> anyhow::Result<()>| {
        let mut times = Vec::new();
        let until = Instant::now() + Duration::from_secs_f64((args.seconds / 2.0).min(2.0));
        for message in messages.iter().cycle() {
            if Instant::now() >= until {
                break;
            }
            let sent = Instant::now();
            run(message.clone())?;
            times.push(sent.elapsed());
        }
        anyhow::Ok(times)
    };
    let mut times = one_at_a_time(&mut |message| run(vec![message], untraced).map(drop))?;
    writeln!(
        out,
        "one message  p50 {:>10}   p99 {:>10}   max {:>10}   (one caller, one message at a time: {} messages)",
        show(quantile(&mut times, 0.5)),
        show(quantile(&mut times, 0.99)),
        show(quantile(&mut times, 1.0)),
        times.len()
    )?;
    let mut here = etl
        .on_this_thread()
        .context("cannot run the modules on the main thread")?;
    // Its own instances start on its first messages (within a quarter of
    // the phase's time, for modules that time out).
    let warming = Instant::now();
    for message in &messages {
        if warming.elapsed().as_secs_f64() >= (args.seconds / 2.0).min(2.0) / 4.0 {
            break;
        }
        here.process_batch(vec![message.clone()], untraced);
    }
    let mut times = one_at_a_time(&mut |message| {
        here.process_batch(vec![message], untraced);
        Ok(())
    })?;
    drop(here);
    writeln!(
        out,
        "  its thread p50 {:>10}   p99 {:>10}   max {:>10}   (the same, the caller's thread running the modules: on_this_thread, {} messages)",
        show(quantile(&mut times, 0.5)),
        show(quantile(&mut times, 0.99)),
        show(quantile(&mut times, 1.0)),
        times.len()
    )?;

    writeln!(out)?;
    writeln!(
        out,
        "where the time goes: module call time over {traced} traced messages"
    )?;
    breakdown(&mut summary, &mut out)?;
    // What the module calls leave: orchestration, and waiting (a module that
    // may not create another instance yet, a retry's backoff).
    let calls: Duration = summary.modules.iter().map(|(_, m)| m.total()).sum();
    writeln!(
        out,
        "the traced passes took {traced_wall:.1?} on {threads} engine thread{}; module calls that answered \
         were {:.1}% of the threads' time (the rest: orchestration, failed calls, and waiting for \
         instance creations or retries)",
        crate::plural(threads),
        100.0 * calls.as_secs_f64() / (traced_wall.as_secs_f64() * threads as f64).max(f64::MIN_POSITIVE)
    )?;
    writeln!(out)?;
    summary.print(&mut out, traced as u64, 0)?;
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Per pipeline, per stage and per module: calls, total time and its share.
fn breakdown(summary: &mut Summary, out: &mut dyn Write) -> io::Result<()> {
    summary.in_plan_order();
    let total: Duration = summary.modules.iter().map(|(_, s)| s.total()).sum();
    let share = |t: Duration| {
        if total.is_zero() {
            "-".to_owned()
        } else {
            format!("{:.1}%", 100.0 * t.as_secs_f64() / total.as_secs_f64())
        }
    };
    let labels = summary.labels();
    let (pw, mw) = summary.widths(&labels);
    let mw = mw.max("(pipeline)".len());
    writeln!(
        out,
        "{:<pw$} {:>5} {:<mw$} {:>8} {:>10} {:>10} {:>10} {:>7}",
        "pipeline", "stage", "module", "calls", "p50", "p99", "total", "share"
    )?;
    let mut pipelines: Vec<&str> = Vec::new();
    for (row, _) in &summary.modules {
        if !pipelines.contains(&row.pipeline.as_str()) {
            pipelines.push(&row.pipeline);
        }
    }
    let pipelines: Vec<String> = pipelines.into_iter().map(str::to_owned).collect();
    for pipeline in &pipelines {
        let sum = |summary: &Summary, stage: Option<u32>| -> (u64, Duration) {
            summary
                .modules
                .iter()
                .filter(|(row, _)| {
                    &row.pipeline == pipeline && stage.is_none_or(|s| s == row.stage)
                })
                .fold((0, Duration::ZERO), |(n, t), (_, m)| {
                    (n + m.ran, t + m.total())
                })
        };
        let (calls, time) = sum(summary, None);
        writeln!(
            out,
            "{pipeline:<pw$} {:>5} {:<mw$} {calls:>8} {:>10} {:>10} {:>10} {:>7}",
            "all",
            "(pipeline)",
            "",
            "",
            show(Some(time)),
            share(time)
        )?;
        let mut stages: Vec<u32> = summary
            .modules
            .iter()
            .filter(|(row, _)| &row.pipeline == pipeline)
            .map(|(row, _)| row.stage)
            .collect();
        stages.sort_unstable();
        stages.dedup();
        for stage in stages {
            let (calls, time) = sum(summary, Some(stage));
            writeln!(
                out,
                "{pipeline:<pw$} {stage:>5} {:<mw$} {calls:>8} {:>10} {:>10} {:>10} {:>7}",
                "(stage)",
                "",
                "",
                show(Some(time)),
                share(time)
            )?;
            for ((row, m), module) in summary.modules.iter_mut().zip(&labels) {
                if &row.pipeline != pipeline || row.stage != stage {
                    continue;
                }
                let (p50, p99) = (show(m.quantile(0.5)), show(m.quantile(0.99)));
                let time = m.total();
                writeln!(
                    out,
                    "{pipeline:<pw$} {stage:>5} {module:<mw$} {:>8} {p50:>10} {p99:>10} {:>10} {:>7}",
                    m.ran,
                    show(Some(time)),
                    share(time)
                )?;
            }
        }
    }
    Ok(())
}

/// The messages of a JSON Lines file; bad lines are reported by number and
/// counted.
fn read_messages(path: &Path) -> anyhow::Result<(Vec<Message>, usize)> {
    let reader = crate::input::open(path)?;
    let (mut messages, mut bad) = (Vec::new(), 0);
    for line in crate::input::numbered_lines(reader) {
        let (number, _, line) = line.with_context(|| format!("reading {}", path.display()))?;
        match line.and_then(|line| crate::input::parse_line(&line)) {
            Ok(Some(m)) => messages.push(m),
            Ok(None) => {}
            Err(e) => {
                bad += 1;
                say!("{}:{number}: {e}", path.display());
            }
        }
    }
    Ok((messages, bad))
}

/// `1234567.8` as `1,234,568`.
fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_are_grouped_by_commas_and_rounded() {
        for (n, shown) in [
            (0.0, "0"),
            (999.4, "999"),
            (999.5, "1,000"),
            (1234567.8, "1,234,568"),
            (100000.0, "100,000"),
            (-1.0, "0"),
        ] {
            assert_eq!(thousands(n), shown, "{n}");
        }
    }
}
