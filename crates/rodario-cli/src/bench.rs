//! `rodario bench`: many calls of one method, their rate and latency percentiles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rodario::ActorProxy;

use crate::failure::Failure;
use crate::json::Json;

/// Latencies are recorded in microseconds, up to a minute, to three significant digits.
const MAX_MICROS: u64 = 60_000_000;

/// Makes `calls` calls of `method` with `concurrency` in flight, then prints the rate and
/// the latency percentiles. Fails with the first call's failure when any call failed.
pub async fn run(
    proxy: ActorProxy,
    method: String,
    args: Vec<u8>,
    calls: u64,
    concurrency: u64,
) -> Result<(), Failure> {
    let bar = ProgressBar::new(calls).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} calls  {per_sec}  eta {eta}")
            .map_err(|e| Failure::new(crate::failure::OTHER, e.to_string()))?,
    );
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.min(calls))
        .map(|_| {
            let (proxy, method, args, next, bar) = (
                proxy.clone(),
                method.clone(),
                args.clone(),
                next.clone(),
                bar.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = new_histogram();
                let mut failure = None;
                let mut failed = 0u64;
                while next.fetch_add(1, Ordering::Relaxed) < calls {
                    let sent = Instant::now();
                    let outcome = async {
                        proxy
                            .call_encoded::<Json>(&method, args.clone())
                            .await?
                            .await
                    }
                    .await;
                    match outcome {
                        Ok(_) => latencies.saturating_record(sent.elapsed().as_micros() as u64),
                        Err(e) => {
                            failed += 1;
                            failure.get_or_insert(e);
                        }
                    }
                    bar.inc(1);
                }
                (latencies, failed, failure)
            })
        })
        .collect();
    let mut latencies = new_histogram();
    let mut failed = 0;
    let mut first_failure = None;
    for worker in workers {
        let (theirs, their_failed, failure) = worker.await.map_err(|e| {
            Failure::new(crate::failure::OTHER, format!("a bench worker failed: {e}"))
        })?;
        latencies
            .add(theirs)
            .map_err(|e| Failure::new(crate::failure::OTHER, e.to_string()))?;
        failed += their_failed;
        if first_failure.is_none() {
            first_failure = failure;
        }
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    report(&latencies, calls - failed, elapsed);
    match first_failure {
        None => Ok(()),
        Some(error) => {
            let failure = Failure::from(error);
            Err(Failure::new(
                failure.code,
                format!(
                    "{failed} of {calls} calls failed; the first: {}",
                    failure.message
                ),
            ))
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

fn report(latencies: &Histogram<u64>, succeeded: u64, elapsed: Duration) {
    out!(
        "{succeeded} calls in {:.2} s: {:.0} calls/s",
        elapsed.as_secs_f64(),
        succeeded as f64 / elapsed.as_secs_f64()
    );
    if latencies.is_empty() {
        return;
    }
    let ms = |micros: u64| micros as f64 / 1e3;
    out!(
        "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        ms(latencies.value_at_quantile(0.5)),
        ms(latencies.value_at_quantile(0.9)),
        ms(latencies.value_at_quantile(0.99)),
        ms(latencies.value_at_quantile(0.999)),
        ms(latencies.max()),
    );
}
