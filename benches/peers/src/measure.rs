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
    let sequential = median_time(rt, settings, &call);
    let batch = median_time(rt, settings, || join_all((0..IN_FLIGHT).map(|_| call())));
    Figures {
        sequential,
        in_flight_per_s: IN_FLIGHT as f64 / batch.as_secs_f64(),
    }
}

/// The median over `settings.samples` samples of the time of one `op`; the warm-up also
/// sizes the samples (how many ops fill one).
fn median_time<F, Fut>(rt: &Runtime, settings: Settings, op: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future,
{
    rt.block_on(async {
        let start = Instant::now();
        let mut ops = 0u32;
        while start.elapsed() < settings.warm_up {
            op().await;
            ops += 1;
        }
        let per_op = start.elapsed() / ops;
        let per_sample = (settings.sample.as_nanos() / per_op.as_nanos().max(1)).max(1) as u32;
        let mut samples = Vec::with_capacity(settings.samples);
        for _ in 0..settings.samples {
            let sample = Instant::now();
            for _ in 0..per_sample {
                op().await;
            }
            samples.push(sample.elapsed() / per_sample);
        }
        samples.sort();
        samples[samples.len() / 2]
    })
}
