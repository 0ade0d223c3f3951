//! The NATS service API (`$SRV.PING`, `$SRV.INFO`, `$SRV.STATS`): each node answers it as
//! one instance of a service, with its actors' methods as endpoints, so that `nats micro
//! ls`, `nats micro info` and `nats micro stats` show a rodario deployment. The layout is in
//! the crate docs ("Service API").
//!
//! The answers are this module's own serde structs rather than async-nats's `service`
//! types: those carry a `time` date and an error type that a node would have to convert
//! into, and leave out what this module adds (the service's metadata in `STATS` answers).
//! The tests read every answer back with async-nats's types, which checks the schema.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt;
use rodario_core::backend::Subscription;
use rodario_core::error::{BackendError, BackendErrorKind};
use rodario_core::observe::{Directory, Discovery, LocalActor, MethodUse};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::{error, timed_out};
use crate::transport::reader_subscription;
use crate::{names, NatsConnection};

/// The first token of every service API subject.
const API: &str = "$SRV";

/// The version every node reports: this crate's (semver, as the API requires).
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The service name of a prefix: the prefix escaped as the KV buckets' names are (see
/// [`names::escape`]), which keeps to the characters service names allow
/// (`[A-Za-z0-9_-]`) and never gives two prefixes one name. `rodario` stays `rodario`.
pub(crate) fn service_name(prefix: &str) -> String {
    names::escape(prefix)
}

/// An endpoint's name, `{type}-{method}`: endpoint names allow `[A-Za-z0-9_-]` only, so
/// any other character (`:` of a path, `<` of a generic) is shown as `_`. The name is a
/// label: the exact type, method and actor are in the endpoint's metadata and subject.
fn endpoint_name(type_name: &str, method: &str) -> String {
    let label = |out: &mut String, part: &str| {
        if part.is_empty() {
            out.push('_');
        }
        out.extend(part.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        }));
    };
    let mut name = String::with_capacity(type_name.len() + method.len() + 1);
    label(&mut name, type_name);
    name.push('-');
    label(&mut name, method);
    name
}

/// The three requests of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    Ping,
    Info,
    Stats,
}

impl Verb {
    const ALL: [Verb; 3] = [Verb::Ping, Verb::Info, Verb::Stats];

    fn token(self) -> &'static str {
        match self {
            Verb::Ping => "PING",
            Verb::Info => "INFO",
            Verb::Stats => "STATS",
        }
    }

    /// The verb of a request's subject, `$SRV.{VERB}[.{name}[.{id}]]`.
    fn of(subject: &str) -> Option<Verb> {
        let token = subject.strip_prefix(API)?.strip_prefix('.')?;
        let token = token.split('.').next()?;
        Verb::ALL.into_iter().find(|verb| verb.token() == token)
    }
}

/// What every answer starts with.
#[derive(Serialize)]
struct Identity<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    id: &'a str,
    version: &'static str,
    metadata: &'a BTreeMap<&'static str, String>,
}

/// `io.nats.micro.v1.info_response`.
#[derive(Serialize)]
struct InfoResponse<'a> {
    #[serde(flatten)]
    identity: Identity<'a>,
    description: &'a str,
    endpoints: Vec<EndpointInfo>,
}

/// An endpoint in an `INFO` answer.
#[derive(Serialize)]
struct EndpointInfo {
    name: String,
    subject: String,
    queue_group: &'static str,
    metadata: BTreeMap<&'static str, String>,
}

/// `io.nats.micro.v1.stats_response`.
#[derive(Serialize)]
struct StatsResponse<'a> {
    #[serde(flatten)]
    identity: Identity<'a>,
    started: &'a str,
    endpoints: Vec<EndpointStats>,
}

/// An endpoint in a `STATS` answer; times in nanoseconds.
#[derive(Serialize)]
struct EndpointStats {
    name: String,
    subject: String,
    queue_group: &'static str,
    num_requests: u64,
    num_errors: u64,
    last_error: String,
    processing_time: u64,
    average_processing_time: u64,
}

/// Actor channels are plain subscriptions, one per actor: no queue group.
const NO_QUEUE_GROUP: &str = "";

/// One node's instance of the service: what its answers hold besides its actors.
struct Instance {
    prefix: String,
    name: String,
    description: String,
    metadata: BTreeMap<&'static str, String>,
    started: String,
    directory: Arc<dyn Directory>,
}

impl Instance {
    fn new(prefix: &str, directory: Arc<dyn Directory>) -> Self {
        // Formatting fails only for years outside 0..=9999.
        let started = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned());
        Instance {
            prefix: prefix.to_owned(),
            name: service_name(prefix),
            description: format!("rodario actors under the NATS prefix {prefix}"),
            metadata: BTreeMap::from([("prefix", prefix.to_owned())]),
            started,
            directory,
        }
    }

    /// The subjects this instance answers: each verb alone, with the service name, and
    /// with the name and the node id.
    fn subjects(&self) -> Vec<String> {
        let id = self.directory.node_id();
        Verb::ALL
            .into_iter()
            .flat_map(|verb| {
                let verb = verb.token();
                [
                    format!("{API}.{verb}"),
                    format!("{API}.{verb}.{}", self.name),
                    format!("{API}.{verb}.{}.{id}", self.name),
                ]
            })
            .collect()
    }

    fn identity(&self, kind: &'static str) -> Identity<'_> {
        Identity {
            kind,
            name: &self.name,
            id: self.directory.node_id(),
            version: VERSION,
            metadata: &self.metadata,
        }
    }

    /// The subject an actor's calls arrive on (as `names::node_subject` builds it).
    fn subject(&self, actor: &LocalActor) -> String {
        let node = self.directory.node_id();
        format!("{}.node.{node}.{}", self.prefix, actor.uuid)
    }

    /// The JSON answer to `verb`.
    fn answer(&self, verb: Verb) -> Result<Vec<u8>, serde_json::Error> {
        match verb {
            Verb::Ping => serde_json::to_vec(&self.identity("io.nats.micro.v1.ping_response")),
            Verb::Info => serde_json::to_vec(&InfoResponse {
                identity: self.identity("io.nats.micro.v1.info_response"),
                description: &self.description,
                endpoints: self.endpoints(|actor, method| EndpointInfo {
                    name: endpoint_name(&actor.type_name, &method.info.name),
                    subject: self.subject(actor),
                    queue_group: NO_QUEUE_GROUP,
                    metadata: BTreeMap::from([
                        ("actor", actor.uuid.clone()),
                        ("type", actor.type_name.clone()),
                        ("method", method.info.name.clone()),
                        ("params", params(method)),
                        ("tags", method.info.tags.join(",")),
                    ]),
                }),
            }),
            Verb::Stats => serde_json::to_vec(&StatsResponse {
                identity: self.identity("io.nats.micro.v1.stats_response"),
                started: &self.started,
                endpoints: self.endpoints(|actor, method| {
                    let processing = nanos(method.processing.as_nanos());
                    EndpointStats {
                        name: endpoint_name(&actor.type_name, &method.info.name),
                        subject: self.subject(actor),
                        queue_group: NO_QUEUE_GROUP,
                        num_requests: method.calls,
                        num_errors: method.errors,
                        last_error: method.last_error.clone().unwrap_or_default(),
                        processing_time: processing,
                        average_processing_time: processing.checked_div(method.calls).unwrap_or(0),
                    }
                }),
            }),
        }
    }

    /// One endpoint per method of each actor, ordered by actor then method, so that
    /// answers list them in the same order every time.
    fn endpoints<T>(&self, endpoint: impl Fn(&LocalActor, &MethodUse) -> T) -> Vec<T> {
        let mut actors = self.directory.actors();
        actors.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        actors
            .iter()
            .flat_map(|actor| {
                let mut methods: Vec<&MethodUse> = actor.methods.iter().collect();
                methods.sort_by(|a, b| a.info.name.cmp(&b.info.name));
                methods
                    .into_iter()
                    .map(|method| endpoint(actor, method))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// A method's parameters as written in its signature: `n: u64, label: String`.
fn params(method: &MethodUse) -> String {
    method
        .info
        .params
        .iter()
        .map(|param| format!("{}: {}", param.name, param.type_name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn nanos(value: u128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

#[async_trait]
impl Discovery for NatsConnection {
    async fn serve(&self, directory: Arc<dyn Directory>) -> Result<Subscription, BackendError> {
        // The id is the last token of `$SRV.{VERB}.{name}.{id}`.
        names::check_token("node id", directory.node_id())?;
        let instance = Instance::new(&self.inner.prefix, directory);
        let client = &self.inner.client;
        let mut subscribers = Vec::new();
        // Unlike an actor channel's, these subscriptions do not need the connection up: the
        // client sends the SUBs when it is (again), so that a node built during an outage
        // answers once it ends. Nothing waits for the server, and nothing needs to know
        // when the server has them.
        let timeout = self.inner.timeout;
        for subject in instance.subjects() {
            let subscriber = tokio::time::timeout(timeout, client.subscribe(subject.clone()))
                .await
                .map_err(|_| timed_out("a subscription", timeout))?
                .map_err(|err| {
                    error(
                        BackendErrorKind::Connection,
                        format!("cannot subscribe to {subject}: {err}"),
                    )
                    .with_source(err)
                })?;
            subscribers.push(subscriber);
        }
        tracing::debug!(
            service = %instance.name,
            id = %instance.directory.node_id(),
            "answering the NATS service API"
        );

        let subjects = format!("{API}.*.{}", instance.name);
        let mut requests = futures_util::stream::select_all(subscribers);
        let client = client.clone();
        let open = Arc::new(AtomicBool::new(true));
        let answering = open.clone();
        // Answers are built and sent from this task, never from the client's connection
        // task; the client restores the subscriptions after a reconnect.
        let reader = tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                if !answering.load(Ordering::Acquire) {
                    break;
                }
                let (Some(reply), Some(verb)) = (request.reply, Verb::of(&request.subject)) else {
                    continue;
                };
                let answer = match instance.answer(verb) {
                    Ok(answer) => answer,
                    Err(err) => {
                        tracing::warn!(%err, ?verb, "cannot encode a service API answer");
                        continue;
                    }
                };
                // Fails for an answer over the server's max_payload (thousands of
                // methods), or once the client is closed.
                if let Err(err) = client.publish(reply, answer.into()).await {
                    tracing::warn!(%err, ?verb, "cannot send a service API answer");
                }
            }
        });
        Ok(reader_subscription(
            self.inner.clone(),
            reader,
            open,
            subjects,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_to_the_allowed_characters() {
        assert_eq!(service_name("rodario"), "rodario");
        assert_eq!(service_name("shop.orders"), "shop_2Eorders");
        assert_eq!(endpoint_name("Counter", "add"), "Counter-add");
        assert_eq!(endpoint_name("a::B<u8>", "get_value"), "a__B_u8_-get_value");
        assert_eq!(endpoint_name("", ""), "_-_");
    }

    #[test]
    fn verbs_are_read_from_subjects() {
        assert_eq!(Verb::of("$SRV.PING"), Some(Verb::Ping));
        assert_eq!(Verb::of("$SRV.INFO.rodario"), Some(Verb::Info));
        assert_eq!(Verb::of("$SRV.STATS.rodario.abc"), Some(Verb::Stats));
        assert_eq!(Verb::of("$SRV.SCHEMA.rodario"), None);
        assert_eq!(Verb::of("$SRVX.PING"), None);
    }
}
