//! The [`Actor`] trait (written for you by `#[rodario::actor]`) and its method specs.

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::client::{TypedCluster, TypedProxy};
use crate::error::RemoteError;
use crate::hooks::{Hook, HookChain, Singular};

/// The method a proxy built from a UUID calls to learn the actor's public methods, as the
/// Python library's proxies do. The actor's node answers it without entering the actor's
/// mailbox, so a busy actor is described at once. Names starting with `__` are reserved.
pub const METHODS_METHOD: &str = "__methods__";

/// The method a cluster proxy calls to list a channel's members. Each node answers for its
/// members without entering their mailboxes.
pub(crate) const MEMBERS_METHOD: &str = "__members__";

/// An actor: state plus public methods that other processes call through proxies.
///
/// Write the methods in an `impl` block marked `#[rodario::actor]`; the attribute
/// implements this trait and generates a typed proxy (`{Type}Proxy`) and a typed cluster
/// proxy (`{Type}Cluster`) with the same methods. Implementing it by hand is possible (see
/// [`MethodSpec`] and [`Actor::dispatch`]) but rarely needed.
pub trait Actor: Send + 'static {
    /// The typed proxy for this actor.
    type Proxy: TypedProxy;
    /// The typed cluster proxy for actors of this type.
    type Cluster: TypedCluster;

    /// The public methods, with their tags and hooks. Called once per node for each actor
    /// type, when its first actor starts there: every actor of the type shares the table.
    fn methods() -> Vec<MethodSpec>;

    /// The actor's type name as discovery reports it (see [`ActorInfo`]): by default the
    /// type's name without its module path.
    fn type_name() -> &'static str {
        short_type_name(std::any::type_name::<Self>())
    }

    /// Runs `method` with the encoded argument tuple `args` and returns the encoded result.
    fn dispatch<'a>(
        &'a mut self,
        method: &'a str,
        args: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, RemoteError>>;
}

/// `path::to::Type` as `Type`; a generic type keeps its whole name.
fn short_type_name(full: &'static str) -> &'static str {
    if full.contains('<') {
        return full;
    }
    full.rsplit("::").next().unwrap_or(full)
}

/// What discovery tells about a running actor: its type and its public methods.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ActorInfo {
    /// The actor's type name ([`Actor::type_name`]).
    pub type_name: String,
    /// Its public methods.
    pub methods: Vec<MethodInfo>,
}

impl ActorInfo {
    /// The description of an actor of type `A`.
    pub(crate) fn of<A: Actor>() -> Self {
        ActorInfo {
            type_name: A::type_name().to_owned(),
            methods: A::methods().iter().map(MethodSpec::info).collect(),
        }
    }
}

/// One member of a cluster channel, as [`ActorRegistry::members`](crate::ActorRegistry::members)
/// lists it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChannelMember {
    /// The member's UUID.
    pub uuid: String,
    /// Its type name ([`Actor::type_name`]).
    pub type_name: String,
}

/// A public method: its name, parameters, decoration tags and hooks.
#[derive(Clone)]
pub struct MethodSpec {
    name: &'static str,
    params: Vec<(&'static str, &'static str)>,
    tags: Vec<&'static str>,
    chain: HookChain,
    singular: Option<Singular>,
}

impl MethodSpec {
    /// A method named `name` with no tags or hooks.
    pub fn new(name: &'static str) -> Self {
        MethodSpec {
            name,
            params: Vec::new(),
            tags: Vec::new(),
            chain: HookChain::default(),
            singular: None,
        }
    }

    /// Appends a parameter, `name` of type `type_name` as written in the source, for
    /// discovery to describe ([`MethodInfo::params`]); `#[rodario::actor]` adds every
    /// parameter in order.
    pub fn param(mut self, name: &'static str, type_name: &'static str) -> Self {
        self.params.push((name, type_name));
        self
    }

    /// Adds a decoration tag.
    pub fn tag(mut self, tag: &'static str) -> Self {
        if !self.tags.contains(&tag) {
            self.tags.push(tag);
        }
        self
    }

    /// Appends a hook; hooks run in the order they were added.
    pub fn hook(mut self, hook: impl Hook) -> Self {
        self.chain.push(Arc::new(hook));
        self
    }

    /// Makes the method singular (see [`Singular`]) and tags it `singular`.
    pub fn singular(mut self, singular: Singular) -> Self {
        self.singular = Some(singular.clone());
        self.tag("singular").hook(singular)
    }

    /// The method's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The method's tags.
    pub fn tags(&self) -> &[&'static str] {
        &self.tags
    }

    /// The method as discovery describes it.
    pub(crate) fn info(&self) -> MethodInfo {
        MethodInfo {
            name: self.name.to_owned(),
            params: self
                .params
                .iter()
                .map(|(name, type_name)| ParamInfo {
                    name: (*name).to_owned(),
                    type_name: (*type_name).to_owned(),
                })
                .collect(),
            tags: self.tags.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    /// The parameters (name, type as written), in order.
    pub(crate) fn params(&self) -> &[(&'static str, &'static str)] {
        &self.params
    }

    pub(crate) fn chain(&self) -> &HookChain {
        &self.chain
    }

    /// The method's `singular` settings, if it is singular.
    pub(crate) fn singular_spec(&self) -> Option<&Singular> {
        self.singular.as_ref()
    }
}

impl fmt::Debug for MethodSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MethodSpec")
            .field("name", &self.name)
            .field("params", &self.params)
            .field("tags", &self.tags)
            .field("hooks", &self.chain.len())
            .finish()
    }
}

/// A public method as an actor describes it to a proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MethodInfo {
    /// The method's name.
    pub name: String,
    /// Its parameters, in order (empty from a node that does not describe them).
    #[serde(default)]
    pub params: Vec<ParamInfo>,
    /// Its decoration tags.
    pub tags: Vec<String>,
}

/// A parameter of a public method, as discovery describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ParamInfo {
    /// The parameter's name.
    pub name: String,
    /// Its type as written in the actor's source (`String`, `Vec<u8>`, `Option<Job>`): a
    /// hint for people and tools, not a schema.
    pub type_name: String,
}
