//! Paths inside a volume: relative, `/`-separated, checked against the rules that keep a
//! path inside the volume and valid on Linux.
//!
//! IO: none.

use std::cmp::Ordering;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Longest path accepted, in bytes (Linux's `PATH_MAX` counts the final NUL: 4096).
pub const MAX_PATH: usize = 4095;

/// Longest name of one component, in bytes (Linux's `NAME_MAX`).
pub const MAX_NAME: usize = 255;

/// A path inside a volume, such as `images/PIA00001.jpg`.
///
/// Built by [`RelPath::new`], it is non-empty UTF-8, relative, made of components joined
/// by single `/`, none of them empty, `.` or `..`, none holding NUL or `\`, each at most
/// [`MAX_NAME`] bytes, the whole at most [`MAX_PATH`] bytes. `\` is refused although
/// Linux allows it, because tools that take it for a separator would read `..\..\x` as
/// an escape. Non-UTF-8 names cannot be expressed: the core reports and skips them.
///
/// Deserializing does not check: a decoded manifest or delta is checked as a whole by
/// [`super::Manifest::validate`], whose error names the path and the rule.
///
/// Order (`Ord`) is component by component, so a directory sorts right before what it
/// holds (`a` < `a/b` < `a.txt`): manifests list entries in this order.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RelPath(String);

/// The rule a path or a symlink target breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathRule {
    /// The empty path.
    #[error("empty path")]
    Empty,
    /// Starts with `/`.
    #[error("absolute path")]
    Absolute,
    /// `//`, or a trailing `/`.
    #[error("empty component")]
    EmptyComponent,
    /// A `.` or `..` component.
    #[error("`.` or `..` component")]
    DotComponent,
    /// A NUL byte.
    #[error("NUL byte")]
    Nul,
    /// A `\`.
    #[error("backslash")]
    Backslash,
    /// A component over [`MAX_NAME`] bytes.
    #[error("component longer than {MAX_NAME} bytes")]
    NameTooLong,
    /// Over [`MAX_PATH`] bytes.
    #[error("longer than {MAX_PATH} bytes")]
    TooLong,
    /// A symlink target whose `..` would climb out of the volume, or that has `..`
    /// after a normal component (the only form whose resolution can be checked).
    #[error("target escapes the volume")]
    Escapes,
}

/// A path that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path {path:?}: {rule}")]
pub struct PathError {
    /// The rejected path.
    pub path: String,
    /// The rule it breaks.
    pub rule: PathRule,
}

impl RelPath {
    /// Checks and wraps a path.
    pub fn new(path: impl Into<String>) -> Result<RelPath, PathError> {
        let path = path.into();
        match check(&path) {
            Ok(()) => Ok(RelPath(path)),
            Err(rule) => Err(PathError { path, rule }),
        }
    }

    /// Wraps a path already checked by [`check`] (or being built from checked parts).
    pub(super) fn unchecked(path: String) -> RelPath {
        RelPath(path)
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// How many components it has.
    pub fn depth(&self) -> usize {
        self.components().count()
    }

    /// The directory holding it, or `None` at the top of the volume.
    pub fn parent(&self) -> Option<RelPath> {
        self.0
            .rsplit_once('/')
            .map(|(parent, _)| RelPath::unchecked(parent.to_owned()))
    }

    /// `self/name`, if `name` is one valid component and the result is not too long.
    pub fn join(&self, name: &str) -> Result<RelPath, PathError> {
        RelPath::new(format!("{}/{name}", self.0))
    }

    /// Whether `self` is `other` or inside it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// The path under `root` on this machine.
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(&self.0)
    }

    /// Checks itself again (after deserializing).
    pub fn check(&self) -> Result<(), PathError> {
        check(&self.0).map_err(|rule| PathError {
            path: self.0.clone(),
            rule,
        })
    }
}

/// The rule `path` breaks, if any.
pub fn check(path: &str) -> Result<(), PathRule> {
    if path.is_empty() {
        return Err(PathRule::Empty);
    }
    if path.starts_with('/') {
        return Err(PathRule::Absolute);
    }
    if path.len() > MAX_PATH {
        return Err(PathRule::TooLong);
    }
    if path.contains('\0') {
        return Err(PathRule::Nul);
    }
    if path.contains('\\') {
        return Err(PathRule::Backslash);
    }
    for name in path.split('/') {
        match name {
            "" => return Err(PathRule::EmptyComponent),
            "." | ".." => return Err(PathRule::DotComponent),
            _ if name.len() > MAX_NAME => return Err(PathRule::NameTooLong),
            _ => {}
        }
    }
    Ok(())
}

/// The rule a symlink at `link` pointing at `target` breaks, if any.
///
/// Accepted: a relative target made of `..` components only at its start, no more of them
/// than the directories above `link`, then normal components (`../../b/c`). Since every
/// symlink in a valid manifest has this form and every entry's parent is a real directory,
/// resolving any path in the mirror never leaves it: `..` only climbs from a link's own
/// directory, never from where another link led.
pub fn check_target(link: &RelPath, target: &str) -> Result<(), PathRule> {
    if target.is_empty() {
        return Err(PathRule::Empty);
    }
    if target.starts_with('/') {
        return Err(PathRule::Absolute);
    }
    if target.len() > MAX_PATH {
        return Err(PathRule::TooLong);
    }
    if target.contains('\0') {
        return Err(PathRule::Nul);
    }
    if target.contains('\\') {
        return Err(PathRule::Backslash);
    }
    let mut ups = 0;
    let mut descended = false;
    for name in target.split('/') {
        match name {
            "" => return Err(PathRule::EmptyComponent),
            "." => return Err(PathRule::DotComponent),
            ".." if descended => return Err(PathRule::Escapes),
            ".." => ups += 1,
            _ if name.len() > MAX_NAME => return Err(PathRule::NameTooLong),
            _ => descended = true,
        }
    }
    if ups > link.depth() - 1 {
        return Err(PathRule::Escapes);
    }
    Ok(())
}

impl Ord for RelPath {
    fn cmp(&self, other: &Self) -> Ordering {
        // `/` sorts below every byte a name may hold (NUL is refused), which orders
        // component by component.
        let key = |b: u8| if b == b'/' { 0 } else { b };
        self.0.bytes().map(key).cmp(other.0.bytes().map(key))
    }
}

impl PartialOrd for RelPath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_path(path: &str, expected: Result<(), PathRule>) {
        assert_eq!(check(path), expected, "{path:?}");
    }

    #[test]
    fn paths_that_escape_or_are_invalid_on_linux_are_refused() {
        check_path("a", Ok(()));
        check_path("a/b.c/d e", Ok(()));
        check_path("..a/b..", Ok(()));
        check_path("", Err(PathRule::Empty));
        check_path("/etc/passwd", Err(PathRule::Absolute));
        check_path("a//b", Err(PathRule::EmptyComponent));
        check_path("a/", Err(PathRule::EmptyComponent));
        check_path("..", Err(PathRule::DotComponent));
        check_path("a/../../b", Err(PathRule::DotComponent));
        check_path("./a", Err(PathRule::DotComponent));
        check_path("a\0b", Err(PathRule::Nul));
        check_path("..\\..\\windows", Err(PathRule::Backslash));
        check_path(&"n".repeat(256), Err(PathRule::NameTooLong));
        check_path(&"n".repeat(255), Ok(()));
        check_path(&["n"; 2048].join("/"), Ok(()));
        check_path(&["n"; 2049].join("/"), Err(PathRule::TooLong));
    }

    #[test]
    fn symlink_targets_must_stay_inside() {
        let link = RelPath::new("a/b/link").unwrap();
        let top = RelPath::new("link").unwrap();
        let ok = |l: &RelPath, t: &str| assert_eq!(check_target(l, t), Ok(()), "{t}");
        let bad = |l: &RelPath, t: &str, r| assert_eq!(check_target(l, t), Err(r), "{t}");
        ok(&link, "c");
        ok(&link, "../c/d");
        ok(&link, "../..");
        ok(&top, "x/y");
        bad(&link, "../../..", PathRule::Escapes);
        bad(&top, "../x", PathRule::Escapes);
        bad(&link, "c/../../../..", PathRule::Escapes);
        bad(&link, "c/..", PathRule::Escapes);
        bad(&link, "/etc", PathRule::Absolute);
        bad(&link, "", PathRule::Empty);
        bad(&link, "./c", PathRule::DotComponent);
        bad(&link, "c//d", PathRule::EmptyComponent);
        bad(&link, "c\0", PathRule::Nul);
    }

    #[test]
    fn order_is_component_by_component() {
        let mut paths: Vec<RelPath> = ["a.txt", "a/b", "a", "a/b/c", "a-b", "b"]
            .into_iter()
            .map(|p| RelPath::new(p).unwrap())
            .collect();
        paths.sort();
        let sorted: Vec<&str> = paths.iter().map(RelPath::as_str).collect();
        assert_eq!(sorted, ["a", "a/b", "a/b/c", "a-b", "a.txt", "b"]);
        let a = RelPath::new("a").unwrap();
        assert!(RelPath::new("a/b").unwrap().starts_with(&a));
        assert!(!RelPath::new("ab").unwrap().starts_with(&a));
        assert_eq!(
            RelPath::new("a/b/c").unwrap().parent().unwrap().as_str(),
            "a/b"
        );
        assert_eq!(a.parent(), None);
    }
}
