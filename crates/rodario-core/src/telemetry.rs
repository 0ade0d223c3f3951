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

use std::fmt::Display;

use tracing::Span;

use crate::error::{Error, RemoteErrorKind};
use crate::frame::{Outcome, TraceContext};

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

/// The span of a call made by this node.
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

/// The trace context to send with a call made in `span`, if it belongs to a trace.
pub(crate) fn trace_context(span: &Span) -> Option<TraceContext> {
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
        Err(Error::Remote { .. }) => "remote_error",
        Err(Error::UnknownMethod { .. }) => "unknown_method",
        Err(Error::Timeout { .. }) => "timeout",
        Err(Error::Overloaded { .. }) => "shed",
        Err(Error::Declined { .. }) => "declined",
        Err(Error::InvalidActor { .. } | Error::EmptyCluster { .. }) => "invalid_actor",
        Err(Error::ActorLost { .. } | Error::Backend(_) | Error::Closed(_)) => "lost",
        Err(_) => "error",
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
    pub(super) fn context_of(span: &Span) -> Option<TraceContext> {
        let context = span.context();
        let otel_span = context.span();
        let span_context = otel_span.span_context();
        if !span_context.is_valid() {
            return None;
        }
        Some(TraceContext {
            traceparent: format!(
                "00-{:032x}-{:016x}-{:02x}",
                span_context.trace_id(),
                span_context.span_id(),
                span_context.trace_flags().to_u8()
            ),
            tracestate: span_context.trace_state().header(),
        })
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
