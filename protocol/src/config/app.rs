//! The application's part of the config: [`App`], through which a binary registers the
//! application it runs on the framework (its sections, their checks, help and printing,
//! its default topics and writers), and `()`, the framework alone.

use std::future::Future;

use serde::Deserializer;

use super::print::Line;
use super::schema::Section;
use super::{ConfigError, Origins};
use crate::entry::TopicConfig;
use crate::log::Store;
use crate::replication::Writers;
use crate::role::Role;

/// An application on the framework, as its node's config sees it: the sections it adds
/// to the file (after the framework's, before `[[topics]]`), read, checked and printed
/// like the framework's, with the same errors and environment overrides
/// (`TETHER_<SECTION>__<KEY>`), and the topics a node holds when its file lists none.
///
/// The binaries name theirs in [`crate::node::main_for`]; `()` is the framework alone,
/// with no section and no topic.
pub trait App: Sized + Clone + std::fmt::Debug + PartialEq {
    /// The application's sections and their keys, in the order they are printed, each
    /// key with its help and role, as the framework's (a role's key in the other role's
    /// file is refused by [`App::check`]). Their names are none of the framework's
    /// sections nor `topics`.
    const SECTIONS: &'static [Section];

    /// The application's sections as written: every key optional, values not yet
    /// checked. Its sections are read into it by [`App::read_section`].
    type Raw: Default;

    /// Reads the section `name` (one of [`App::SECTIONS`]) of the file into `raw`, as
    /// serde reads any section (`#[serde(deny_unknown_fields)]`, so that an unknown key
    /// is reported with its line).
    fn read_section<'de, D: Deserializer<'de>>(
        raw: &mut Self::Raw,
        name: &str,
        section: D,
    ) -> Result<(), D::Error>;

    /// The settings of a node of this role when its file sets none of the keys.
    fn default_for(role: Role) -> Self;

    /// Fills in the role's defaults and checks every value; errors name the key and where
    /// its value came from ([`Origins::invalid`]).
    fn check(raw: Self::Raw, role: Role, origins: &Origins) -> Result<Self, ConfigError>;

    /// How the key `key` of `[section]` (one of [`App::SECTIONS`]) is printed.
    fn line(&self, section: &str, key: &str) -> Line;

    /// The topics a node of this role holds when its file lists none.
    fn topics(role: Role) -> Vec<TopicConfig>;

    /// Who writes those default topics (at the core).
    fn writers() -> Writers;

    /// The command line's `request <id>` at an edge, on the stopped node's store: what
    /// the application makes of it, as a line for the operator. By default there is
    /// nothing to request.
    fn request(store: &Store, id: &str) -> impl Future<Output = Result<String, String>> {
        let _ = store;
        let id = id.to_owned();
        async move { Err(format!("nothing to request as {id:?} at this node")) }
    }
}

/// The framework alone: no section of its own, no topic by default.
impl App for () {
    const SECTIONS: &'static [Section] = &[];

    type Raw = ();

    fn read_section<'de, D: Deserializer<'de>>(
        _: &mut (),
        name: &str,
        _: D,
    ) -> Result<(), D::Error> {
        Err(serde::de::Error::custom(format_args!(
            "no section [{name}]"
        )))
    }

    fn default_for(_: Role) {}

    fn check(_: (), _: Role, _: &Origins) -> Result<(), ConfigError> {
        Ok(())
    }

    fn line(&self, section: &str, key: &str) -> Line {
        unreachable!("the framework alone has no key {section}.{key}")
    }

    fn topics(_: Role) -> Vec<TopicConfig> {
        Vec::new()
    }

    fn writers() -> Writers {
        Writers::default()
    }
}
