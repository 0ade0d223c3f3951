//! A call's spans: `rodario.call` where it is made, `rodario.handle` where an actor runs it.
//!
//! Both are `tracing` spans at `INFO`, so any subscriber records them, and with feature
//! `opentelemetry` they cross processes: the caller's span context rides in the call frame
//! as a W3C trace context ([`TraceContext`]) and becomes the parent of the host's span, so
//! a `tracing-opentelemetry` layer exports one trace per call. A cluster call has one
//! caller span and one host span per member.
//!
//! | span | fields |
//! |---|---|
//! | `rodario.call` | `method`, `target` (actor UUID or `cluster:{channel}`), `backend`, `outcome` |
//! | `rodario.handle` | `actor_type`, `method`, `uuid`, `backend`, `outcome` |
//!
//! `outcome` is one of [`OUTCOMES`].
//!
//! # Metrics
//!
//! With feature `metrics`, a node records these through the [`metrics`](https://docs.rs/metrics)
//! facade, so any exporter (Prometheus, StatsD, ...) installed as the process's recorder
//! sees them; without it, the calls below compile to nothing.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `rodario_calls_sent_total` | counter | `kind` (`actor`, `cluster`, `tell`, `cluster_tell`), `actor_type`, `method`, `outcome` | calls this node made, by how they ended (a cluster or one-way call: by how its publish ended) |
//! | `rodario_call_duration_seconds` | histogram | `actor_type`, `method`, `outcome` | a direct call's latency at the caller, from the call to its outcome |
//! | `rodario_calls_handled_total` | counter | `actor_type`, `method`, `outcome` | calls this node's actors answered, shed calls included |
//! | `rodario_handle_duration_seconds` | histogram | `actor_type`, `method` | time an actor spent on a call, hooks included |
//! | `rodario_mailbox_depth` | gauge | `actor_type`, `uuid` | calls queued for an actor, as its worker takes the next |
//! | `rodario_pending_calls` | gauge | | calls this node waits on |
//! | `rodario_reconnects_total` | counter | `backend` | connections to the broker restored |
//! | `rodario_frames_dropped_total` | counter | `reason` (`malformed`, `not_a_call`, `no_caller`) | frames this node could not use |
//!
//! `actor_type` is the type name discovery reports; a caller that made its proxy without
//! asking the actor (`registry.proxy`) labels its calls `unknown`. A host labels a call to a
//! method its actor does not have `(unknown)`.

use std::fmt::Display;
use std::sync::Arc;
#[cfg(feature = "metrics")]
use std::time::Duration;

#[cfg(feature = "metrics")]
use metrics::{Key, Label, Level, Metadata, SharedString};
use tracing::Span;

use crate::error::{Error, RemoteErrorKind};
use crate::frame::{Outcome, TraceContext};
#[cfg(feature = "metrics")]
use crate::name::ActorId;

/// The values of the spans' `outcome` field (and of the metrics' `outcome` label).
pub const OUTCOMES: &[&str] = &[
    "ok",
    "remote_error",
    "unknown_method",
    "timeout",
    "shed",
    "declined",
    "invalid_actor",
    "lost",
    "error",
];

/// The `method` label of a call to a method its actor lacks: callers choose method names,
/// and a label per name would let them grow the metrics without bound.
#[cfg(feature = "metrics")]
pub(crate) const UNKNOWN_METHOD: &str = "(unknown)";

/// The span of a call made by this node.
#[inline]
pub(crate) fn caller_span(method: &str, target: &dyn Display, backend: &'static str) -> Span {
    tracing::info_span!(
        "rodario.call",
        method,
        target = %target,
        backend,
        outcome = tracing::field::Empty,
        otel.kind = "client",
    )
}

/// The span of a call an actor of this node runs, a child of the caller's span when the call
/// carries its trace context.
#[inline]
pub(crate) fn handler_span(
    actor_type: &'static str,
    method: &str,
    uuid: &dyn Display,
    backend: &'static str,
    trace: Option<&TraceContext>,
) -> Span {
    let span = tracing::info_span!(
        "rodario.handle",
        actor_type,
        method,
        uuid = %uuid,
        backend,
        outcome = tracing::field::Empty,
        otel.kind = "server",
    );
    #[cfg(feature = "opentelemetry")]
    if let Some(trace) = trace {
        otel::set_parent(&span, trace);
    }
    #[cfg(not(feature = "opentelemetry"))]
    let _ = trace;
    span
}

/// The trace context to send with a call made in `span`, if it belongs to a trace (boxed:
/// the call's future holds it while the call is sent, and most calls have none).
pub(crate) fn trace_context(span: &Span) -> Option<Box<TraceContext>> {
    #[cfg(feature = "opentelemetry")]
    return otel::context_of(span);
    #[cfg(not(feature = "opentelemetry"))]
    {
        let _ = span;
        None
    }
}

/// A caller's outcome label for a call that ended with `result`.
pub(crate) fn caller_outcome<T>(result: &Result<T, Error>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(error) => error_outcome(error),
    }
}

/// A caller's outcome label for a call that failed with `error`.
pub(crate) fn error_outcome(error: &Error) -> &'static str {
    match error {
        Error::Remote { .. } => "remote_error",
        Error::UnknownMethod { .. } => "unknown_method",
        Error::Timeout { .. } => "timeout",
        Error::Overloaded { .. } => "shed",
        Error::Declined { .. } => "declined",
        Error::InvalidActor { .. } | Error::EmptyCluster { .. } => "invalid_actor",
        Error::ActorLost { .. } | Error::Backend(_) | Error::Closed(_) => "lost",
        _ => "error",
    }
}

/// When a direct call was made, for its latency histogram: without feature `metrics` nothing
/// reads it, so it reads no clock.
#[derive(Clone, Copy)]
pub(crate) struct Stopwatch {
    #[cfg(feature = "metrics")]
    started: tokio::time::Instant,
}

impl Stopwatch {
    /// A stopwatch started at `now` (a time its caller read anyway: a clock read costs
    /// about as much as the rest of it).
    pub(crate) fn at(now: tokio::time::Instant) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = now;
        Stopwatch {
            #[cfg(feature = "metrics")]
            started: now,
        }
    }
}

/// A host's outcome label for a call its actor answered with `outcome`.
pub(crate) fn handler_outcome(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Ok(_) => "ok",
        Outcome::Declined => "declined",
        Outcome::Err(error) => match error.kind {
            RemoteErrorKind::Overloaded => "shed",
            RemoteErrorKind::UnknownMethod => "unknown_method",
            _ => "remote_error",
        },
    }
}

/// A call this node made ended with `outcome` (for a direct call: `started` when it was
/// made).
pub(crate) fn call_sent(
    kind: &'static str,
    actor_type: &str,
    method: &str,
    outcome: &'static str,
    started: Option<Stopwatch>,
) {
    #[cfg(feature = "metrics")]
    {
        // Builds its metrics' keys, recorder or not (the facade cannot tell): static labels
        // borrow, and each name is copied once and shared.
        let labels = sent_labels(kind, actor_type, method, outcome);
        metrics::counter!("rodario_calls_sent_total", labels.iter()).increment(1);
        if let Some(started) = started {
            metrics::histogram!("rodario_call_duration_seconds", labels[1..].iter())
                .record(started.started.elapsed());
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (kind, actor_type, method, outcome, started);
}

/// What a proxy labels its calls' metrics with (the actor's type name), and the metric keys
/// of its calls, made at the first call of each kind, method and outcome and kept (at most
/// [`MAX_PROXY_KEYS`]) for the next ones: building a key cost about a sixth of an
/// in-memory call's work. The recorder is still asked for the metric on every call, so one
/// installed later counts them too. Without feature `metrics`, empty.
pub(crate) struct ProxyMetrics {
    #[cfg(feature = "metrics")]
    actor_type: Arc<str>,
    #[cfg(feature = "metrics")]
    made: std::sync::RwLock<Vec<SentKeys>>,
}

/// Most metric keys one proxy keeps: a proxy calling by name may be asked for any number
/// of methods; past this, its calls build their keys each time.
#[cfg(feature = "metrics")]
const MAX_PROXY_KEYS: usize = 64;

/// The metric keys of one kind, method and outcome of a proxy's calls.
#[cfg(feature = "metrics")]
struct SentKeys {
    kind: &'static str,
    method: Box<str>,
    outcome: &'static str,
    /// `rodario_calls_sent_total`.
    calls: Key,
    /// `rodario_call_duration_seconds`.
    duration: Key,
}

impl ProxyMetrics {
    /// The metrics of a proxy to an actor of type `actor_type` (`unknown` if not known).
    pub(crate) fn new(actor_type: &str) -> Arc<Self> {
        #[cfg(not(feature = "metrics"))]
        let _ = actor_type;
        Arc::new(ProxyMetrics {
            #[cfg(feature = "metrics")]
            actor_type: Arc::from(actor_type),
            #[cfg(feature = "metrics")]
            made: std::sync::RwLock::new(Vec::new()),
        })
    }

    /// A call of `kind` to `method` that this proxy made ended with `outcome` (for a direct
    /// call: `started` when it was made).
    pub(crate) fn sent(
        &self,
        kind: &'static str,
        method: &str,
        outcome: &'static str,
        started: Option<Stopwatch>,
    ) {
        #[cfg(feature = "metrics")]
        {
            let record = |keys: &SentKeys| {
                metrics::with_recorder(|recorder| {
                    recorder
                        .register_counter(&keys.calls, &METADATA)
                        .increment(1);
                    if let Some(started) = started {
                        recorder
                            .register_histogram(&keys.duration, &METADATA)
                            .record(started.started.elapsed());
                    }
                });
            };
            let same = |keys: &&SentKeys| {
                keys.kind == kind && keys.outcome == outcome && *keys.method == *method
            };
            let made = self.made.read().unwrap_or_else(|e| e.into_inner());
            if let Some(keys) = made.iter().find(same) {
                return record(keys);
            }
            drop(made);
            let mut made = self.made.write().unwrap_or_else(|e| e.into_inner());
            if let Some(keys) = made.iter().find(same) {
                return record(keys);
            }
            if made.len() >= MAX_PROXY_KEYS {
                drop(made);
                return call_sent(kind, &self.actor_type, method, outcome, started);
            }
            let labels = sent_labels(kind, &self.actor_type, method, outcome);
            let keys = SentKeys {
                kind,
                method: method.into(),
                outcome,
                calls: Key::from_parts("rodario_calls_sent_total", labels.to_vec()),
                duration: Key::from_parts("rodario_call_duration_seconds", labels[1..].to_vec()),
            };
            record(&keys);
            made.push(keys);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (kind, method, outcome, started);
    }
}

/// The labels of `rodario_calls_sent_total`; `rodario_call_duration_seconds` takes all but
/// the first.
#[cfg(feature = "metrics")]
fn sent_labels(
    kind: &'static str,
    actor_type: &str,
    method: &str,
    outcome: &'static str,
) -> [Label; 4] {
    [
        Label::from_static_parts("kind", kind),
        Label::new(
            "actor_type",
            SharedString::from(Arc::<str>::from(actor_type)),
        ),
        Label::new("method", SharedString::from(Arc::<str>::from(method))),
        Label::from_static_parts("outcome", outcome),
    ]
}

/// What the facade's macros would record as a metric's origin: this module.
#[cfg(feature = "metrics")]
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The outcomes a host labels a call with ([`handler_outcome`], and `shed`).
#[cfg(feature = "metrics")]
const HANDLER_OUTCOMES: [&str; 5] = ["ok", "declined", "shed", "unknown_method", "remote_error"];

/// The metric keys of the calls to one method of one actor type (or to the methods it
/// lacks), built once per type on a node: building a key (its labels collected and
/// hashed) cost about a third of an in-memory call's own work. The recorder is still asked
/// for the metric on every call, as the facade's macros do, so one installed later counts
/// them too.
#[cfg(feature = "metrics")]
pub(crate) struct HandledKeys {
    /// `rodario_calls_handled_total`, one per outcome, in [`HANDLER_OUTCOMES`]' order.
    calls: Box<[Key]>,
    /// `rodario_handle_duration_seconds`.
    duration: Key,
}

#[cfg(feature = "metrics")]
impl HandledKeys {
    /// The keys of `actor_type`'s method `method` ([`UNKNOWN_METHOD`] for those it lacks).
    pub(crate) fn new(actor_type: &'static str, method: &'static str) -> Self {
        let labels = [
            Label::from_static_parts("actor_type", actor_type),
            Label::from_static_parts("method", method),
        ];
        let calls = HANDLER_OUTCOMES
            .iter()
            .map(|outcome| {
                let mut labels = labels.to_vec();
                labels.push(Label::from_static_parts("outcome", outcome));
                Key::from_parts("rodario_calls_handled_total", labels)
            })
            .collect();
        HandledKeys {
            calls,
            duration: Key::from_parts("rodario_handle_duration_seconds", labels.to_vec()),
        }
    }
}

/// An actor of this node answered a call with `outcome` (one of [`handler_outcome`]'s, or
/// `shed`) after `elapsed` (none for a call it shed without running).
#[cfg(feature = "metrics")]
pub(crate) fn call_handled(keys: &HandledKeys, outcome: &'static str, elapsed: Option<Duration>) {
    let Some(index) = HANDLER_OUTCOMES.iter().position(|known| *known == outcome) else {
        return;
    };
    metrics::with_recorder(|recorder| {
        recorder
            .register_counter(&keys.calls[index], &METADATA)
            .increment(1);
        if let Some(elapsed) = elapsed {
            recorder
                .register_histogram(&keys.duration, &METADATA)
                .record(elapsed);
        }
    });
}

/// The key of `rodario_mailbox_depth` for actor `uuid` of type `actor_type`.
#[cfg(feature = "metrics")]
pub(crate) fn mailbox_depth_key(actor_type: &'static str, uuid: &ActorId) -> Key {
    let labels = vec![
        Label::from_static_parts("actor_type", actor_type),
        Label::new("uuid", SharedString::from(uuid.shared())),
    ];
    Key::from_parts("rodario_mailbox_depth", labels)
}

/// An actor's worker takes its next call with `depth` more queued (`key` from
/// [`mailbox_depth_key`]).
#[cfg(feature = "metrics")]
pub(crate) fn mailbox_depth(key: &Key, depth: usize) {
    metrics::with_recorder(|recorder| {
        recorder.register_gauge(key, &METADATA).set(depth as f64);
    });
}

/// One more (or, with `false`, one fewer) call this node waits on.
pub(crate) fn pending_call(added: bool) {
    #[cfg(feature = "metrics")]
    {
        let gauge = metrics::gauge!("rodario_pending_calls");
        if added {
            gauge.increment(1.0);
        } else {
            gauge.decrement(1.0);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = added;
}

/// The connection to the broker was restored.
#[cfg(feature = "metrics")]
pub(crate) fn reconnected(backend: &'static str) {
    metrics::counter!("rodario_reconnects_total", "backend" => backend).increment(1);
}

/// A frame this node could not use was dropped.
pub(crate) fn frame_dropped(reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("rodario_frames_dropped_total", "reason" => reason).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}

#[cfg(feature = "opentelemetry")]
mod otel {
    use std::str::FromStr;

    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::Context;
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use crate::frame::TraceContext;

    /// `span`'s OpenTelemetry span context as W3C headers.
    pub(super) fn context_of(span: &Span) -> Option<Box<TraceContext>> {
        let context = span.context();
        let otel_span = context.span();
        let span_context = otel_span.span_context();
        if !span_context.is_valid() {
            return None;
        }
        Some(Box::new(TraceContext {
            traceparent: format!(
                "00-{:032x}-{:016x}-{:02x}",
                span_context.trace_id(),
                span_context.span_id(),
                span_context.trace_flags().to_u8()
            ),
            tracestate: span_context.trace_state().header(),
        }))
    }

    /// Makes the remote span `trace` describes the parent of `span`.
    pub(super) fn set_parent(span: &Span, trace: &TraceContext) {
        let Some(remote) = parse(trace) else {
            tracing::debug!(traceparent = %trace.traceparent, "ignored an invalid trace context");
            return;
        };
        let parent = Context::new().with_remote_span_context(remote);
        if let Err(e) = span.set_parent(parent) {
            tracing::debug!(error = %e, "could not link a call's span to its caller's");
        }
    }

    /// A `traceparent` of version `00`: `00-{trace id}-{parent id}-{flags}`, in hex.
    fn parse(trace: &TraceContext) -> Option<SpanContext> {
        let mut parts = trace.traceparent.split('-');
        if parts.next()? != "00" {
            return None;
        }
        let trace_id = TraceId::from_hex(parts.next()?).ok()?;
        let span_id = SpanId::from_hex(parts.next()?).ok()?;
        let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
        if parts.next().is_some() {
            return None;
        }
        let state = TraceState::from_str(&trace.tracestate).unwrap_or_default();
        let context = SpanContext::new(trace_id, span_id, TraceFlags::new(flags), true, state);
        context.is_valid().then_some(context)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_valid_traceparents_only() {
            let good = TraceContext {
                traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                tracestate: "vendor=x".into(),
            };
            let parsed = parse(&good).unwrap();
            assert_eq!(
                format!("{:032x}", parsed.trace_id()),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            assert!(parsed.is_remote());
            for bad in [
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                "00-zz-00f067aa0ba902b7-01",
                "",
            ] {
                let trace = TraceContext {
                    traceparent: bad.into(),
                    tracestate: String::new(),
                };
                assert!(parse(&trace).is_none(), "{bad}");
            }
        }
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    use metrics::{Counter, Gauge, Histogram, KeyName, Recorder, Unit};

    use super::*;

    /// Counts every counter it is asked for, by name and sorted labels.
    #[derive(Default)]
    struct Counting {
        counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    }

    impl Counting {
        fn count(&self, key: &str) -> u64 {
            let counters = self.counters.lock().unwrap();
            counters.get(key).map_or(0, |n| n.load(Ordering::Relaxed))
        }
    }

    impl Recorder for Counting {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let mut counters = self.counters.lock().unwrap();
            Counter::from_arc(counters.entry(name).or_default().clone())
        }

        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }

        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    fn sent(kind: &str, method: &str, outcome: &str) -> String {
        format!(
            "rodario_calls_sent_total{{actor_type=T,kind={kind},method={method},outcome={outcome}}}"
        )
    }

    #[test]
    fn a_proxys_kept_keys_count_each_kind_method_and_outcome_apart() {
        let recorder = Counting::default();
        let proxy = ProxyMetrics::new("T");
        metrics::with_local_recorder(&recorder, || {
            for _ in 0..3 {
                proxy.sent("actor", "add", "ok", None);
            }
            proxy.sent("actor", "add", "timeout", None);
            proxy.sent("tell", "add", "ok", None);
            proxy.sent("actor", "ad", "ok", None);
        });
        assert_eq!(recorder.count(&sent("actor", "add", "ok")), 3);
        assert_eq!(recorder.count(&sent("actor", "add", "timeout")), 1);
        assert_eq!(recorder.count(&sent("tell", "add", "ok")), 1);
        assert_eq!(recorder.count(&sent("actor", "ad", "ok")), 1);
    }

    #[test]
    fn past_the_kept_keys_calls_are_still_counted() {
        let recorder = Counting::default();
        let proxy = ProxyMetrics::new("T");
        let methods = MAX_PROXY_KEYS + 10;
        metrics::with_local_recorder(&recorder, || {
            for round in 0..2 {
                for method in 0..methods {
                    proxy.sent("actor", &format!("m{method}"), "ok", None);
                }
                assert_eq!(proxy.made.read().unwrap().len(), MAX_PROXY_KEYS, "{round}");
            }
        });
        for method in 0..methods {
            assert_eq!(
                recorder.count(&sent("actor", &format!("m{method}"), "ok")),
                2
            );
        }
    }

    #[test]
    fn a_types_kept_keys_count_each_outcome_apart() {
        let recorder = Counting::default();
        let keys = HandledKeys::new("T", "add");
        metrics::with_local_recorder(&recorder, || {
            call_handled(&keys, "ok", Some(Duration::from_millis(1)));
            call_handled(&keys, "ok", None);
            call_handled(&keys, "shed", None);
        });
        let handled = |outcome: &str| {
            recorder.count(&format!(
                "rodario_calls_handled_total{{actor_type=T,method=add,outcome={outcome}}}"
            ))
        };
        assert_eq!(
            (handled("ok"), handled("shed"), handled("declined")),
            (2, 1, 0)
        );
    }
}
