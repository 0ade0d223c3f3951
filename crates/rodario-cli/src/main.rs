//! `rodario`: see, call, watch and measure rodario actors from a shell.
//!
//! ```text
//! cargo install --path crates/rodario-cli
//! export RODARIO_URL=redis://127.0.0.1:6379      # or pass --url; nats://, tls://, rediss:// too
//! rodario actors [--json]                        # the live actors and their types
//! rodario methods UUID [--json]                  # an actor's methods, parameters and tags
//! rodario call UUID METHOD [ARG …] [--timeout D] # one call; each ARG a JSON value
//! rodario cluster CHANNEL METHOD [ARG …]         # a broadcast: the expected count, then each reply
//! rodario tail CHANNEL                           # every frame on actor:UUID, cluster:NAME or reply:NODE, as JSON lines
//! rodario locks acquire NAME … [--expiry D]      # prints each lease's token
//! rodario locks release NAME … --token TOKEN
//! rodario ping                                   # one broker round trip, timed
//! rodario bench UUID METHOD [ARG …] --calls N --concurrency C
//! ```
//!
//! `--prefix` (or `RODARIO_PREFIX`) sets the backend's key or subject prefix, for
//! deployments that use one. Durations are written `250ms`, `2s`, `1.5s` or `1m`.
//!
//! # Exit codes
//!
//! Every failure prints one line on stderr saying what failed and what to fix, and exits
//! with the code of its kind:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | anything else: the method failed in the actor, a lock is held by someone else, a reply did not decode |
//! | 2 | the command line: usage, a bad URL, invalid JSON, an invalid name or duration |
//! | 3 | the broker: unreachable, refused the credentials, or the connection dropped |
//! | 4 | no such actor (or it died while the call waited), or nobody on the cluster channel |
//! | 5 | the actor does not serve the method, or the arguments do not fit its parameters |
//! | 6 | no answer before the deadline (`--timeout`) |

/// `println!` that does not panic when stdout is closed: see [`write_out`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_out(format_args!($($arg)*))
    };
}

mod bench;
mod failure;
mod json;
mod tail;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt;
use rodario::backend::{Backend, LockKey};
use rodario::{ActorProxy, ClusterProxy, Node};
use serde_json::{json, Value};

use failure::{Failure, OTHER};

/// See, call, watch and measure rodario actors.
#[derive(Parser, Debug)]
#[command(name = "rodario", version, about, max_term_width = 100)]
struct Cli {
    /// The broker: memory:, redis://…, rediss://…, nats://… or tls://… (several NATS servers
    /// separated by commas).
    #[arg(long, env = "RODARIO_URL", global = true, hide_env_values = true)]
    url: Option<String>,
    /// The backend's key or subject prefix, when the deployment uses one (default: none on
    /// Redis, `rodario` on NATS).
    #[arg(long, env = "RODARIO_PREFIX", global = true)]
    prefix: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Lists the live actors and their types.
    Actors {
        /// Prints a JSON array of `{"uuid", "type"}` objects.
        #[arg(long)]
        json: bool,
    },
    /// Lists an actor's methods: their parameters and tags.
    Methods {
        /// The actor's UUID.
        uuid: String,
        /// Prints the description as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Calls a method of an actor and prints its reply as JSON.
    Call {
        /// The actor's UUID.
        uuid: String,
        #[command(flatten)]
        call: CallArgs,
    },
    /// Calls a method of every actor on a cluster channel: prints how many replies to
    /// expect, then each reply as it arrives.
    Cluster {
        /// The cluster channel.
        channel: String,
        #[command(flatten)]
        call: CallArgs,
    },
    /// Prints every frame on a channel as one JSON line, until interrupted.
    Tail {
        /// `actor:UUID`, `cluster:NAME` or `reply:NODE`.
        channel: String,
    },
    /// Takes or frees leases.
    Locks {
        #[command(subcommand)]
        action: LockAction,
    },
    /// Times one broker round trip (a registry read).
    Ping,
    /// Calls a method many times, concurrently, and reports calls/s and latency
    /// percentiles.
    Bench {
        /// The actor's UUID.
        uuid: String,
        #[command(flatten)]
        call: CallArgs,
        /// How many calls in all.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
        calls: u64,
        /// How many calls in flight at once.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        concurrency: u64,
    },
}

/// A method, its arguments and the deadline of each call.
#[derive(Args, Debug)]
struct CallArgs {
    /// The method's name.
    method: String,
    /// The arguments, each a JSON value: `'"text"'`, `42`, `'{"a": [1, 2]}'`.
    #[arg(allow_negative_numbers = true)]
    args: Vec<String>,
    /// The deadline of each call.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
}

#[derive(Subcommand, Debug)]
enum LockAction {
    /// Takes each lease that is free and prints its token; a lease someone holds is left
    /// alone (exit code 1).
    Acquire {
        /// The leases' names.
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        context: LockContext,
        /// How long each lease lasts: it lapses then unless released.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        expiry: Duration,
    },
    /// Frees leases taken with TOKEN (exit code 1 for one that is not held with it).
    Release {
        /// The leases' names.
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        context: LockContext,
        /// The token `locks acquire` printed.
        #[arg(long)]
        token: String,
    },
}

#[derive(Args, Debug)]
struct LockContext {
    /// The leases' context: the broker key is `{context}:{name}`.
    #[arg(long, default_value = "global.lock")]
    context: String,
}

/// Parses `250ms`, `2s`, `1.5s`, `1m` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?}: use ms, s or m (e.g. 500ms, 2s)"
            ))
        }
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write e.g. 500ms, 2s or 1m"))?;
    Duration::try_from_secs_f64(value * scale)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} is not a positive duration"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return fail(Failure::new(
                OTHER,
                format!("cannot start the runtime: {e}"),
            ))
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(failure) => fail(failure),
    }
}

/// Writes one line on stdout. A reader that went away (`rodario tail … | head -3`) ends the
/// process quietly, as a closed pipe ends other commands, where `println!` would panic.
fn write_out(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("rodario: cannot write to stdout: {e}");
        std::process::exit(OTHER.into());
    }
}

fn fail(failure: Failure) -> ExitCode {
    eprintln!("rodario: {}", failure.line());
    ExitCode::from(failure.code)
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let url = cli
        .url
        .filter(|url| !url.trim().is_empty())
        .ok_or_else(|| {
            Failure::usage(
                "no broker given: pass --url URL or set RODARIO_URL (e.g. redis://127.0.0.1:6379)",
            )
        })?;
    let node = Node::new(connect(&url, cli.prefix.as_deref()).await?);
    let outcome = command(&node, cli.command).await;
    node.shutdown().await;
    outcome
}

/// The backend of `url`, with `prefix` when one is given.
async fn connect(url: &str, prefix: Option<&str>) -> Result<Backend, Failure> {
    let Some(prefix) = prefix.filter(|prefix| !prefix.is_empty()) else {
        return Ok(rodario::connect(url).await?);
    };
    let scheme = url.split_once(':').map_or(url, |(scheme, _)| scheme);
    let backend = match scheme {
        "redis" | "rediss" => {
            rodario::redis::RedisConfig::new(url)
                .prefix(prefix)
                .connect()
                .await?
        }
        "nats" | "tls" => {
            let config = rodario::nats::NatsConfig::from_url(url).prefix(prefix);
            rodario::nats::NatsBackend::connect(config).await?
        }
        _ => {
            return Err(Failure::usage(format!(
                "--prefix applies to redis://, rediss://, nats:// and tls:// URLs, not {url:?}"
            )))
        }
    };
    Ok(backend)
}

async fn command(node: &Node, command: Command) -> Result<ExitCode, Failure> {
    match command {
        Command::Actors { json } => actors(node, json).await?,
        Command::Methods { uuid, json } => methods(node, &uuid, json).await?,
        Command::Call { uuid, call } => {
            let args = json::encode_args(&call.args)?;
            let proxy = node
                .registry()
                .proxy::<ActorProxy>(&uuid)?
                .with_timeout(call.timeout);
            let reply = proxy
                .call_encoded::<json::Json>(&call.method, args)
                .await?
                .await?;
            out!("{}", reply.0);
        }
        Command::Cluster { channel, call } => return cluster(node, &channel, call).await,
        Command::Tail { channel } => tail::run(node, &channel).await?,
        Command::Locks { action } => return locks(node, action).await,
        Command::Ping => {
            let started = Instant::now();
            let actors = node.registry().actors().await?;
            out!(
                "{}: {:.2} ms ({} live actors)",
                node.backend().name(),
                started.elapsed().as_secs_f64() * 1e3,
                actors.len()
            );
        }
        Command::Bench {
            uuid,
            call,
            calls,
            concurrency,
        } => {
            let args = json::encode_args(&call.args)?;
            let proxy = node
                .registry()
                .proxy::<ActorProxy>(&uuid)?
                .with_timeout(call.timeout);
            bench::run(proxy, call.method, args, calls, concurrency).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn actors(node: &Node, as_json: bool) -> Result<(), Failure> {
    let registry = node.registry();
    let uuids = registry.actors().await?;
    // Described concurrently: a listed actor whose process just died answers nobody, and
    // each description waits for its deadline alone.
    let described = futures_util::future::join_all(uuids.iter().map(|uuid| async {
        match registry.describe(uuid).await {
            Ok(info) => Some(info.type_name),
            Err(_) => None,
        }
    }))
    .await;
    if as_json {
        let list: Vec<Value> = uuids
            .iter()
            .zip(&described)
            .map(|(uuid, type_name)| json!({"uuid": uuid, "type": type_name}))
            .collect();
        out!("{}", Value::Array(list));
    } else {
        for (uuid, type_name) in uuids.iter().zip(&described) {
            out!(
                "{uuid}\t{}",
                type_name.as_deref().unwrap_or("(not answering)")
            );
        }
    }
    Ok(())
}

async fn methods(node: &Node, uuid: &str, as_json: bool) -> Result<(), Failure> {
    let info = node.registry().describe(uuid).await?;
    if as_json {
        let methods: Vec<Value> = info
            .methods
            .iter()
            .map(|m| {
                let params: Vec<Value> = m
                    .params
                    .iter()
                    .map(|p| json!({"name": p.name, "type": p.type_name}))
                    .collect();
                json!({"name": m.name, "params": params, "tags": m.tags})
            })
            .collect();
        out!("{}", json!({"type": info.type_name, "methods": methods}));
        return Ok(());
    }
    out!("{}", info.type_name);
    for method in &info.methods {
        let params: Vec<String> = method
            .params
            .iter()
            .map(|p| format!("{}: {}", p.name, p.type_name))
            .collect();
        let signature = format!("{}({})", method.name, params.join(", "));
        if method.tags.is_empty() {
            out!("  {signature}");
        } else {
            out!("  {signature}\t[{}]", method.tags.join(", "));
        }
    }
    Ok(())
}

async fn cluster(node: &Node, channel: &str, call: CallArgs) -> Result<ExitCode, Failure> {
    let args = json::encode_args(&call.args)?;
    let cluster = node
        .cluster::<ClusterProxy>(channel)?
        .with_timeout(call.timeout);
    let mut gather = cluster
        .call_encoded::<json::Json>(&call.method, args)
        .await?;
    out!("expected {}", gather.expected().await?);
    // A member's failure is reported and the others still heard; the exit code is the
    // last failure's.
    let mut last = None;
    while let Some(reply) = gather.next().await {
        match reply {
            Ok(value) => out!("{}", value.0),
            Err(e) => {
                let failure = Failure::from(e);
                eprintln!("rodario: {}", failure.line());
                last = Some(failure.code);
            }
        }
    }
    Ok(last.map_or(ExitCode::SUCCESS, ExitCode::from))
}

async fn locks(node: &Node, action: LockAction) -> Result<ExitCode, Failure> {
    let mut refused = false;
    match action {
        LockAction::Acquire {
            names,
            context,
            expiry,
        } => {
            for name in names {
                let request = node
                    .locks()
                    .acquire(&name)
                    .context(&context.context)
                    .expiry(expiry);
                match request.await? {
                    Some(lease) => {
                        out!("{name}\tacquired for {expiry:?}\ttoken {}", lease.token())
                    }
                    None => {
                        refused = true;
                        eprintln!("rodario: lock {name:?} is held by someone else; retry when it lapses or is released");
                    }
                }
            }
        }
        LockAction::Release {
            names,
            context,
            token,
        } => {
            for name in names {
                let key = LockKey {
                    context: context.context.clone(),
                    name: name.clone(),
                };
                let release = node.backend().locks().release(&key, &token);
                let released = tokio::time::timeout(node.call_timeout(), release)
                    .await
                    .map_err(|_| {
                        Failure::new(
                            failure::TIMEOUT,
                            format!(
                                "the broker did not answer the release of {name:?} in {:?}",
                                node.call_timeout()
                            ),
                        )
                    })??;
                if released {
                    out!("{name}\treleased");
                } else {
                    refused = true;
                    eprintln!("rodario: lock {name:?} is not held with this token (it lapsed, or another holder has it); check --token and --context");
                }
            }
        }
    }
    Ok(if refused {
        ExitCode::from(OTHER)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
