//! A node's configuration: one TOML file, environment overrides, and the checked result.
//!
//! Loading goes in four steps ([`Config::load`]), for the framework's sections and those
//! of the application the binary runs ([`App`]):
//! 1. the file (if any) is parsed as it is written, so that a syntax error, an unknown key
//!    or a value of the wrong type is reported with its line, its column and the file;
//! 2. each environment variable `TETHER_<SECTION>__<KEY>` replaces one key (for example
//!    `TETHER_NODE__NAME=bravo`, `TETHER_STORE__DISK_BUDGET=10GiB`,
//!    `TETHER_LINK__EDGES=alpha,bravo`); the value is read as a TOML value if it is one,
//!    else as a string. Variables without `__` are ignored. Topics cannot be set from the
//!    environment;
//! 3. the result is checked and converted into [`Config`]: names, sizes, durations, no
//!    duplicate topic, the `[link]` keys of the node's role only (a core listens, an edge
//!    dials). Errors name the key (`topics[2].name`, counted from 0) and where it came
//!    from (the file or the variable).
//! 4. at an edge, what its first-run setup page recorded ([`FirstRun`]: its name and its
//!    HQ) replaces those keys, unless the environment sets them.
//!
//! Keys left out take the defaults of the node's [`Role`]; a file that lists `[[topics]]`
//! replaces the default list. Sizes are bytes, as an integer or a string with a unit
//! (`"512KiB"`, `"64MiB"`, `"10GB"`); durations are strings with a unit (`"500ms"`,
//! `"10s"`, `"30m"`, `"12h"`, `"7d"`).
//!
//! The files, by concept: `schema` (the typed [`Config`], its sections and each role's
//! defaults), `app` (the application's part: [`App`]), `load` (the file and the
//! environment over it, as written), `check` (what was written into [`Config`], errors
//! with their [`Origin`]), `first_run` (an edge's first-run record), `print` ([`Config::to_toml_with`], `--print-config`) and `units`
//! (sizes and durations, read and written).
//!
//! IO: [`Config::load`] reads the file it is given and the process environment.

use std::fmt;
use std::path::PathBuf;

mod app;
mod check;
mod first_run;
mod load;
mod print;
mod schema;
#[cfg(test)]
mod tests;
mod units;

pub use app::App;
pub use check::Origins;
pub use first_run::{FIRST_RUN_FILE, FirstRun};
pub use load::{ENV_PREFIX, NameList};
pub use print::Line;
pub use schema::{
    ALLOWANCE_DEFAULT, Allowance, BridgeSettings, Config, FailoverCore, HttpSettings, Key,
    LinkSettings, LogFormat, LogSettings, MirrorConfig, NodeSettings, RELAY_DEFAULT, SEE_ABOVE,
    Section, StoreSettings,
};
pub use units::{Scalar, format_duration, positive_duration, positive_size, size_value};

/// Why a config could not be loaded. Each names the file, variable or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("config file {}: {}", path.display(), source.to_string().trim_end())]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's error: it shows the line, the column and the offending text.
        source: toml::de::Error,
    },
    /// An environment variable could not be applied to the config.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// The variable, such as `TETHER_NODE__NAME`.
        var: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value is malformed or out of range.
    #[error("{origin}: {key}: {reason}")]
    Invalid {
        /// Where the value came from.
        origin: Origin,
        /// The key, such as `store.max_entry_bytes` or `topics[2].name`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where a config value came from, to name it in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in defaults.
    Default,
    /// The config file at this path.
    File(PathBuf),
    /// This environment variable.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default config"),
            Origin::File(path) => write!(f, "config file {}", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}
