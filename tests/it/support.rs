//! What the scenarios share, apart from them: the node binaries as child processes
//! ([`process`]), the tools outside Rust ([`tools`]), and a WebDriver client
//! ([`webdriver`]).

pub(crate) mod process;
pub(crate) mod tools;
pub(crate) mod webdriver;
