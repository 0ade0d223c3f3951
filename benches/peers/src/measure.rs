//! A small timing loop, the same for every framework: warm up, then time samples of
//! back-to-back operations and keep the median sample.

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::runtime::Runtime;

/// Calls in flight at once in the throughput figures, as in rodario's `call_inflight64`.
pub const IN_FLIGHT: usize = 64;

/// How long to warm up and to measure.
#[derive(Clone, Copy)]
pub struct Settings {
    warm_up: Duration,
    sample: Duration,
    samples: usize,
}

impl Settings {
    /// As rodario's criterion benches: 0.5 s of warm-up, 2 s of measurement (10 samples).
    pub fn full() -> Self {
        Settings {
            warm_up: Duration::from_millis(500),
            sample: Duration::from_millis(200),
            samples: 10,
        }
    }

    /// A fast pass: rougher figures, a few seconds for the whole run.
    pub fn quick() -> Self {
        Settings {
            warm_up: Duration::from_millis(150),
            sample: Duration::from_millis(60),
            samples: 5,
        }
    }
}

/// What one framework measured.
pub struct Figures {
    /// Median time of one call, calls made one after another.
    pub sequential: Duration,
    /// Calls per second with [`IN_FLIGHT`] calls started at once, batch after batch.
    pub in_flight_per_s: f64,
}

/// Measures `call` one at a time, then [`IN_FLIGHT`] at once, on `rt` (driven from this
/// thread with `block_on`, as criterion's `to_async` does).
pub fn figures<F, Fut>(rt: &Runtime, settings: Settings, call: F) -> Figures
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let sequential = rt.block_on(median_time(settings, &call));
    let batch = rt.block_on(median_time(settings, || {
        join_all((0..IN_FLIGHT).map(|_| call()))
    }));
    Figures {
        sequential,
        in_flight_per_s: IN_FLIGHT as f64 / batch.as_secs_f64(),
    }
}

/// [`figures`] of two contenders, their samples interleaved (a, b, then b, a, ...): on a
/// shared machine the load drifts within seconds, and measuring one after the other would
/// give one the quiet period and the other the busy one.
pub fn compare<A, FA, B, FB>(rt: &Runtime, settings: Settings, a: A, b: B) -> (Figures, Figures)
where
    A: Fn() -> FA,
    FA: Future<Output = ()>,
    B: Fn() -> FB,
    FB: Future<Output = ()>,
{
    let (seq_a, seq_b) = rt.block_on(median_times(settings, &a, &b));
    let (batch_a, batch_b) = rt.block_on(median_times(
        settings,
        || join_all((0..IN_FLIGHT).map(|_| a())),
        || join_all((0..IN_FLIGHT).map(|_| b())),
    ));
    let figures = |sequential, batch: Duration| Figures {
        sequential,
        in_flight_per_s: IN_FLIGHT as f64 / batch.as_secs_f64(),
    };
    (figures(seq_a, batch_a), figures(seq_b, batch_b))
}

/// How many back-to-back `op`s fill one sample, from a warm-up of `settings.warm_up`.
async fn warm_up<F, Fut>(settings: Settings, op: F) -> u32
where
    F: Fn() -> Fut,
    Fut: Future,
{
    let start = Instant::now();
    let mut ops = 0u32;
    while start.elapsed() < settings.warm_up {
        op().await;
        ops += 1;
    }
    let per_op = start.elapsed() / ops;
    (settings.sample.as_nanos() / per_op.as_nanos().max(1)).max(1) as u32
}

/// The time of one `op`, over one sample of `ops` back-to-back ops.
async fn sample<F, Fut>(ops: u32, op: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future,
{
    let start = Instant::now();
    for _ in 0..ops {
        op().await;
    }
    start.elapsed() / ops
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The median over `settings.samples` samples of the time of one `op`.
async fn median_time<F, Fut>(settings: Settings, op: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future,
{
    let ops = warm_up(settings, &op).await;
    let mut samples = Vec::with_capacity(settings.samples);
    for _ in 0..settings.samples {
        samples.push(sample(ops, &op).await);
    }
    median(samples)
}

/// [`median_time`] of two ops, their samples interleaved.
async fn median_times<A, FA, B, FB>(settings: Settings, a: A, b: B) -> (Duration, Duration)
where
    A: Fn() -> FA,
    FA: Future,
    B: Fn() -> FB,
    FB: Future,
{
    let ops_a = warm_up(settings, &a).await;
    let ops_b = warm_up(settings, &b).await;
    let mut samples_a = Vec::with_capacity(settings.samples);
    let mut samples_b = Vec::with_capacity(settings.samples);
    for i in 0..settings.samples {
        // Each goes first in turn: neither always follows the other's burst of work.
        if i % 2 == 0 {
            samples_a.push(sample(ops_a, &a).await);
            samples_b.push(sample(ops_b, &b).await);
        } else {
            samples_b.push(sample(ops_b, &b).await);
            samples_a.push(sample(ops_a, &a).await);
        }
    }
    (median(samples_a), median(samples_b))
}
