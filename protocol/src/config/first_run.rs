//! What an edge's first-run setup recorded: the name the operator gave it and its HQ
//! (address and name), in `<certs_dir>/first-run.toml` beside the certificate it enrolled
//! for. [`Config::load`] applies it over the config file and under the environment, so an
//! edge set up on its page keeps dialing the HQ it enrolled with. Deleting the file goes
//! back to the config file's values. The data directory stays where it was.
//!
//! IO: reads and writes that one file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::check::check_host_port;
use super::{Config, ConfigError, Origin};
use crate::entry::NodeName;

/// The file's name, in the certificates directory.
pub const FIRST_RUN_FILE: &str = "first-run.toml";

/// The most bytes the file may hold: three short keys and a comment.
const MAX_BYTES: u64 = 4 << 10;

/// The environment variables that win over the file, by the key they set.
const ENV: [(&str, &str); 3] = [
    ("node.name", "TETHER_NODE__NAME"),
    ("link.core", "TETHER_LINK__CORE"),
    ("link.core_name", "TETHER_LINK__CORE_NAME"),
];

/// The operator's first-run answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirstRun {
    /// This edge's name (`node.name`).
    pub name: NodeName,
    /// HQ's address (`link.core`), `host:port`.
    pub core: String,
    /// HQ's name (`link.core_name`).
    pub core_name: NodeName,
}

impl FirstRun {
    /// Checks the answers as the config checks its keys; the reason names the key.
    pub fn check(&self) -> Result<(), String> {
        check_host_port(&self.core).map_err(|e| format!("HQ's address: {e}"))?;
        if self.core_name == self.name {
            return Err(format!(
                "{} is this edge's own name, not HQ's: HQ's name is the one on its \
                 certificate (its node.name, `hq` unless set)",
                self.name
            ));
        }
        Ok(())
    }

    /// Where the file is for this certificates directory.
    pub fn path(certs_dir: &Path) -> PathBuf {
        certs_dir.join(FIRST_RUN_FILE)
    }

    /// The answers recorded in `certs_dir`, if there are any.
    pub fn read(certs_dir: &Path) -> Result<Option<FirstRun>, ConfigError> {
        let path = FirstRun::path(certs_dir);
        let invalid = |reason: String| ConfigError::Invalid {
            origin: Origin::File(path.clone()),
            key: "(the first-run setup's record)".to_owned(),
            reason: format!("{reason}; delete the file to set this edge up again"),
        };
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_BYTES + 1), &mut text)
            .map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
        if text.len() as u64 > MAX_BYTES {
            return Err(invalid(format!("larger than {MAX_BYTES} bytes")));
        }
        let first_run: FirstRun = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.clone(),
            source,
        })?;
        first_run.check().map_err(invalid)?;
        Ok(Some(first_run))
    }

    /// Records the answers in `certs_dir` (created if missing), durably: a new file's
    /// bytes, then its name, are on disk when this returns.
    pub fn write(&self, certs_dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(certs_dir)?;
        let path = FirstRun::path(certs_dir);
        let staged = certs_dir.join(format!("{FIRST_RUN_FILE}.new"));
        let body = toml::to_string(self).map_err(std::io::Error::other)?;
        let text = format!(
            "# Written by this edge's first-run setup. These keys replace the config file's\n\
             # node.name, link.core and link.core_name; the environment still wins.\n\
             # Delete this file to use the config file's values.\n{body}"
        );
        let mut file = std::fs::File::create(&staged)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&staged, &path)?;
        std::fs::File::open(certs_dir)?.sync_all()
    }

    /// Removes the record from `certs_dir`, if it is there.
    pub fn remove(certs_dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(FirstRun::path(certs_dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Applies the answers to `config`, but not over a key the process environment sets.
    pub fn apply(&self, config: &mut Config) {
        let by_env = |key: &str| {
            ENV.iter()
                .any(|(k, var)| *k == key && std::env::var_os(var).is_some())
        };
        if !by_env("node.name") {
            config.node.name = self.name.clone();
        }
        if !by_env("link.core") {
            config.link.core = self.core.clone();
        }
        if !by_env("link.core_name") {
            config.link.core_name = self.core_name.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> NodeName {
        NodeName::new(text).unwrap()
    }

    #[test]
    fn answers_are_kept_and_a_bad_record_is_refused_with_its_file() {
        let dir = crate::tls::tests::TempDir::new("first-run");
        assert!(FirstRun::read(dir.path()).unwrap().is_none());
        let answers = FirstRun {
            name: name("kilo"),
            core: "hq.example.org:7000".to_owned(),
            core_name: name("hq"),
        };
        answers.write(dir.path()).unwrap();
        assert_eq!(FirstRun::read(dir.path()).unwrap(), Some(answers));

        let path = FirstRun::path(dir.path());
        for (text, says) in [
            (
                "name = \"kilo\"\ncore = \"hq:7000\"\ncore_name = \"hq\"\nextra = 1\n",
                "unknown field",
            ),
            (
                "name = \"kilo\"\ncore = \"hq\"\ncore_name = \"hq\"\n",
                "no port",
            ),
            (
                "name = \"hq\"\ncore = \"hq:7000\"\ncore_name = \"hq\"\n",
                "own name",
            ),
            (
                "name = \"../x\"\ncore = \"hq:7000\"\ncore_name = \"hq\"\n",
                "first-run.toml",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = FirstRun::read(dir.path()).unwrap_err().to_string();
            assert!(
                error.contains(says) && error.contains("first-run.toml"),
                "{error}"
            );
        }
        std::fs::write(&path, "#".repeat(5000)).unwrap();
        let error = FirstRun::read(dir.path()).unwrap_err().to_string();
        assert!(error.contains("larger than"), "{error}");
        FirstRun::remove(dir.path()).unwrap();
        FirstRun::remove(dir.path()).unwrap();
        assert!(FirstRun::read(dir.path()).unwrap().is_none());
    }
}
