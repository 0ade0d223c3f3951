//! What every actor of one type shares on a node, built once per type: its methods' specs
//! and descriptions, its `singular` methods, and the description discovery answers with.
//! An actor keeps only its own counters beside it, so a node of many actors of one type
//! holds one method table, not one per actor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::actor::{Actor, ActorInfo, MethodInfo, MethodSpec};
use crate::error::Result;
use crate::frame::encode_value;
use crate::hooks::Singular;
use crate::observe::ActorCounters;
use crate::sync::LocalKeys;
#[cfg(feature = "metrics")]
use crate::telemetry::{self, HandledKeys};

/// An actor type's `singular` methods by name, looked up (by a name read off the wire) for
/// every cluster call its actors receive.
pub(crate) type SingularMethods = HashMap<&'static str, Singular, LocalKeys>;

/// The method a call names.
pub(crate) enum MethodName {
    /// One of the receiving actor type's methods: its name as the type declares it, and its
    /// index in [`ActorType::method`].
    Listed { name: &'static str, index: usize },
    /// As the frame gave it (a cluster call, which actors of several types may receive, or
    /// a method the type lacks).
    Given(String),
}

impl MethodName {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            MethodName::Listed { name, .. } => name,
            MethodName::Given(name) => name,
        }
    }
}

/// One actor type's methods, shared by its actors on a node.
pub(crate) struct ActorType {
    /// [`Actor::type_name`], computed once: it may search the type's path.
    pub(crate) type_name: &'static str,
    /// Each public method's index in `specs` (and in `infos` and an actor's counters).
    methods: HashMap<&'static str, usize, LocalKeys>,
    /// The methods' specs, sorted by name.
    specs: Vec<MethodSpec>,
    /// The methods' descriptions, sorted by name.
    infos: Vec<MethodInfo>,
    /// The `singular` methods, which a node decides on for their actors in cluster calls.
    pub(crate) singular: Arc<SingularMethods>,
    /// The encoded [`ActorInfo`] discovery answers with.
    pub(crate) description: Arc<[u8]>,
    /// The metric keys of each method's calls, by index, and of calls to methods the type
    /// lacks (last).
    #[cfg(feature = "metrics")]
    handled: Box<[HandledKeys]>,
}

impl ActorType {
    /// The table of `A`'s methods.
    pub(crate) fn of<A: Actor>() -> Result<Self> {
        let description = encode_value(&ActorInfo::of::<A>(), "actor description")?;
        let mut specs = A::methods();
        specs.sort_by_key(|spec| spec.name());
        let infos = specs.iter().map(MethodSpec::info).collect();
        let singular = specs
            .iter()
            .filter_map(|spec| Some((spec.name(), spec.singular_spec()?.clone())))
            .collect();
        let type_name = A::type_name();
        #[cfg(feature = "metrics")]
        let handled = specs
            .iter()
            .map(MethodSpec::name)
            .chain([telemetry::UNKNOWN_METHOD])
            .map(|method| HandledKeys::new(type_name, method))
            .collect();
        let methods = specs
            .iter()
            .enumerate()
            .map(|(index, spec)| (spec.name(), index))
            .collect();
        Ok(ActorType {
            type_name,
            methods,
            specs,
            infos,
            singular: Arc::new(singular),
            description: description.into(),
            #[cfg(feature = "metrics")]
            handled,
        })
    }

    /// The spec of `method` and its index among the descriptions (and an actor's counters).
    pub(crate) fn method(&self, method: &str) -> Option<(&MethodSpec, usize)> {
        let index = *self.methods.get(method)?;
        Some((&self.specs[index], index))
    }

    /// The spec and index of the method a call names: looked up unless the call's reader
    /// found it among this type's methods already.
    pub(crate) fn method_of(&self, method: &MethodName) -> Option<(&MethodSpec, usize)> {
        match method {
            MethodName::Listed { index, .. } => Some((self.specs.get(*index)?, *index)),
            MethodName::Given(name) => self.method(name),
        }
    }

    /// `name` as a call's method: this type's own name for it, when it has the method.
    pub(crate) fn method_name(&self, name: &str) -> MethodName {
        match self.method(name) {
            Some((spec, index)) => MethodName::Listed {
                name: spec.name(),
                index,
            },
            None => MethodName::Given(name.to_owned()),
        }
    }

    /// Counts a call to `method` that an actor of this type answered with `outcome` (one of
    /// [`crate::telemetry::handler_outcome`]'s, or `shed`) after `elapsed` (none for a call shed
    /// without running); with feature `metrics`, nothing otherwise.
    pub(crate) fn count_handled(
        &self,
        method: &str,
        outcome: &'static str,
        elapsed: Option<Duration>,
    ) {
        let index = self.methods.get(method).copied();
        self.count_handled_at(index, outcome, elapsed);
    }

    /// [`ActorType::count_handled`] for the method at `index` of [`ActorType::method`]
    /// (`None`: not a method of this type), for a caller that looked it up already.
    pub(crate) fn count_handled_at(
        &self,
        index: Option<usize>,
        outcome: &'static str,
        elapsed: Option<Duration>,
    ) {
        #[cfg(feature = "metrics")]
        {
            let unknown = self.handled.len() - 1;
            let keys = &self.handled[index.unwrap_or(unknown)];
            telemetry::call_handled(keys, outcome, elapsed);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (index, outcome, elapsed);
    }

    /// Fresh counters for one actor of this type.
    pub(crate) fn new_counters(&self) -> Arc<ActorCounters> {
        Arc::new(ActorCounters::new(self.infos.len()))
    }

    /// The methods' descriptions, in the order of an actor's counters.
    pub(crate) fn infos(&self) -> &[MethodInfo] {
        &self.infos
    }
}
