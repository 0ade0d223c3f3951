//! A small timing loop, the same for every framework: warm up, then time samples of
//! back-to-back operations and keep the median sample.

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::future::{join_all, LocalBoxFuture};
use futures_util::FutureExt;
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

/// A contender of the remote rows: one call, and [`IN_FLIGHT`] calls at once.
pub trait Contender {
    /// One call, answered.
    fn call(&self) -> LocalBoxFuture<'_, ()>;

    /// [`IN_FLIGHT`] calls started at once, all answered: by default that many [`call`]s
    /// joined.
    ///
    /// [`call`]: Contender::call
    fn batch(&self) -> LocalBoxFuture<'_, ()> {
        Box::pin(join_all((0..IN_FLIGHT).map(|_| self.call())).map(drop))
    }
}

/// [`figures`] of several contenders, their samples interleaved (each goes first in turn):
/// on a shared machine the load drifts within seconds, and measuring one after the other
/// would give one the quiet period and another the busy one.
pub fn compare(rt: &Runtime, settings: Settings, contenders: &[&dyn Contender]) -> Vec<Figures> {
    let calls: Vec<Op<'_>> = contenders
        .iter()
        .map(|contender| Box::new(move || contender.call()) as Op<'_>)
        .collect();
    let batches: Vec<Op<'_>> = contenders
        .iter()
        .map(|contender| Box::new(move || contender.batch()) as Op<'_>)
        .collect();
    let sequential = rt.block_on(median_times(settings, &calls));
    let batch = rt.block_on(median_times(settings, &batches));
    sequential
        .into_iter()
        .zip(batch)
        .map(|(sequential, batch)| Figures {
            sequential,
            in_flight_per_s: IN_FLIGHT as f64 / batch.as_secs_f64(),
        })
        .collect()
}

/// One contender's operation, timed by [`median_times`].
type Op<'a> = Box<dyn Fn() -> LocalBoxFuture<'a, ()> + 'a>;

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

/// [`median_time`] of each op, their samples interleaved.
async fn median_times(settings: Settings, ops: &[Op<'_>]) -> Vec<Duration> {
    let mut counts = Vec::with_capacity(ops.len());
    for op in ops {
        counts.push(warm_up(settings, op).await);
    }
    let mut samples = vec![Vec::with_capacity(settings.samples); ops.len()];
    for i in 0..settings.samples {
        // Each goes first in turn: none always follows another's burst of work.
        for k in 0..ops.len() {
            let j = (i + k) % ops.len();
            samples[j].push(sample(counts[j], &ops[j]).await);
        }
    }
    samples.into_iter().map(median).collect()
}
