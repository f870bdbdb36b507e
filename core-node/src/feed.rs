//! The IMAGE feed document: parsing the NASA Image and Video Library API format into
//! [`FeedItem`]s, one error per bad item, and [`asset_id`], the safe id of an asset.
//!
//! The format: a JSON object `collection` with a list `items`; each item has `data`, a
//! list whose first element holds `nasa_id`, `title`, `description`, `date_created`,
//! `keywords` (a list of strings), `center` and `media_type`, and `links`, a list of
//! objects with `href` (the image URL), `rel` (`preview`, ...) and `render` (`image`).
//!
//! A feed comes from outside: [`parse`] rejects the whole document only when it is not
//! JSON or has no `collection.items` list; anything wrong inside one item is an
//! [`ItemError`] naming the item and the field, and the other items are still used.
//!
//! IO: none.

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};

/// Longest string field accepted, in bytes. NASA descriptions run to a few KiB; a feed
/// that puts megabytes in one is wrong, and the item would bloat every entry it enters.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;

/// Most keywords accepted on one item.
pub const MAX_KEYWORDS: usize = 256;

/// Longest id [`asset_id`] returns, in bytes.
pub const MAX_ID_BYTES: usize = 80;

/// One usable item of a feed: an image with its metadata and URL.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeedItem {
    /// The asset's id, [`asset_id`] of `nasa_id`: safe as a file name and a doc id.
    pub id: String,
    /// The id the feed gave, as it was (never used as a path).
    pub nasa_id: String,
    /// The title (not empty).
    pub title: String,
    /// The description; empty if the feed had none.
    pub description: String,
    /// When the image was made, as the feed wrote it (NASA: RFC 3339); empty if absent.
    pub date_created: String,
    /// Keywords, in the feed's order; empty if absent.
    pub keywords: Vec<String>,
    /// The NASA center (or other source) that published it; empty if absent.
    pub center: String,
    /// Always `image`: other media types are item errors.
    pub media_type: String,
    /// The image URL (`http`, `https` or `file`), chosen among the item's links.
    pub href: String,
}

/// Why one item of a feed was not used.
///
/// Displays as `item 3 (PIA00001): data[0].title: expected a string, found a number`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    /// The item's position in `collection.items`, counted from 0.
    pub index: usize,
    /// The item's `nasa_id`, when it has a readable one.
    pub nasa_id: Option<String>,
    /// The field at fault, such as `data[0].title` or `links`; empty for the item itself.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "item {}", self.index)?;
        if let Some(nasa_id) = &self.nasa_id {
            write!(f, " ({nasa_id})")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ItemError {}

/// A parsed feed: the usable items in document order, and one error per item left out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed {
    /// The items that passed every check.
    pub items: Vec<FeedItem>,
    /// The items that did not, in document order.
    pub errors: Vec<ItemError>,
}

/// Why a feed document was rejected as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// The bytes are not JSON.
    #[error("feed is not JSON: {message} at line {line} column {column}")]
    NotJson {
        /// Line of the error, from 1.
        line: usize,
        /// Column of the error, from 1.
        column: usize,
        /// What the JSON parser expected or found.
        message: String,
    },
    /// It is JSON, but not a feed: there is no `collection.items` list.
    #[error("feed has the wrong shape: {0}")]
    Shape(String),
}

/// Parses a feed document. Only a document that is not JSON, or has no
/// `collection.items` list, is an error; see [`Parsed`] for the rest.
///
/// Per item: `nasa_id`, `title` (strings, not empty) and `media_type` `image` are
/// required, and at least one link whose `href` is an `http`, `https` or `file` URL (the
/// link with `render` `image` is preferred, then `rel` `preview`, then the first).
/// `description`, `date_created`, `center` (strings) and `keywords` (a list of strings)
/// may be absent or `null`, but another type is an error. A `nasa_id` seen before in the
/// document is an error (the first item stays), and so is one whose [`asset_id`]
/// collides with an earlier item's.
pub fn parse(bytes: &[u8]) -> Result<Parsed, FeedError> {
    let document: Value = serde_json::from_slice(bytes).map_err(|err| FeedError::NotJson {
        line: err.line(),
        column: err.column(),
        message: json_message(&err),
    })?;
    let items = items_of(&document)?;
    let mut parsed = Parsed::default();
    // Which item holds each nasa_id and each id, to report duplicates and collisions.
    let mut nasa_ids: HashMap<String, usize> = HashMap::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    for (index, value) in items.iter().enumerate() {
        let result = parse_item(value).and_then(|item| {
            if let Some(first) = nasa_ids.get(&item.nasa_id) {
                return Err(Fault::new(
                    "data[0].nasa_id",
                    format!("duplicate of item {first}"),
                ));
            }
            if let Some(first) = ids.get(&item.id) {
                let message = format!("its id {} collides with item {first}'s", item.id);
                return Err(Fault::new("data[0].nasa_id", message));
            }
            Ok(item)
        });
        match result {
            Ok(item) => {
                nasa_ids.insert(item.nasa_id.clone(), index);
                ids.insert(item.id.clone(), index);
                parsed.items.push(item);
            }
            Err(fault) => parsed.errors.push(ItemError {
                index,
                nasa_id: readable_nasa_id(value),
                field: fault.field,
                message: fault.message,
            }),
        }
    }
    Ok(parsed)
}

/// Maps any string to a safe asset id: a file name and a table doc id.
///
/// The result is not empty, at most [`MAX_ID_BYTES`] bytes, made of `[A-Za-z0-9._-]`
/// only, and starts with neither `.` nor `-` (so it is never `.`, `..`, a hidden file or
/// an option to a command). An id that already is all that is returned unchanged, as
/// NASA's are (`PIA00001`, `as11-40-5874`). Any other is cleaned (each run of other
/// characters becomes one `_`, a leading `.` or `-` becomes `_`, cut to length) and gets
/// `-` and 8 hex digits of the BLAKE3 hash of the original, so that two ids that clean
/// to the same text stay apart: `../../x` becomes `_._.._x-` and its hash.
pub fn asset_id(nasa_id: &str) -> String {
    let mut clean = String::with_capacity(nasa_id.len().min(MAX_ID_BYTES));
    for c in nasa_id.chars() {
        let safe = c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if safe {
            clean.push(c);
        } else if !clean.ends_with('_') {
            clean.push('_');
        }
    }
    if clean.starts_with(['.', '-']) {
        clean.replace_range(..1, "_");
    }
    if clean.is_empty() {
        clean.push('_');
    } else if clean == nasa_id && clean.len() <= MAX_ID_BYTES {
        return clean;
    }
    let hash = blake3::hash(nasa_id.as_bytes()).to_hex();
    // Only ASCII is left, so any byte index is a char boundary.
    clean.truncate(MAX_ID_BYTES - 9);
    clean.push('-');
    clean.push_str(&hash[..8]);
    clean
}

/// A bad field of one item, before the item's index and nasa_id are added.
#[derive(Debug)]
struct Fault {
    field: String,
    message: String,
}

impl Fault {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// serde_json's message without its own " at line L column C" suffix.
fn json_message(err: &serde_json::Error) -> String {
    let message = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    match message.strip_suffix(&suffix) {
        Some(stripped) => stripped.to_owned(),
        None => message,
    }
}

fn items_of(document: &Value) -> Result<&Vec<Value>, FeedError> {
    let Value::Object(top) = document else {
        return Err(FeedError::Shape(format!(
            "expected an object with collection.items, found {}",
            kind(document)
        )));
    };
    let collection = match top.get("collection") {
        Some(Value::Object(collection)) => collection,
        Some(other) => {
            return Err(FeedError::Shape(format!(
                "collection: expected an object, found {}",
                kind(other)
            )));
        }
        None => return Err(FeedError::Shape("no collection.items list".to_owned())),
    };
    match collection.get("items") {
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(FeedError::Shape(format!(
            "collection.items: expected a list, found {}",
            kind(other)
        ))),
        None => Err(FeedError::Shape("no collection.items list".to_owned())),
    }
}

/// The item's `nasa_id` for an error message, if it has a string one (shortened).
fn readable_nasa_id(item: &Value) -> Option<String> {
    let nasa_id = item.get("data")?.get(0)?.get("nasa_id")?.as_str()?;
    if nasa_id.is_empty() {
        return None;
    }
    let mut shown: String = nasa_id.chars().take(MAX_ID_BYTES).collect();
    if shown.len() < nasa_id.len() {
        shown.push('…');
    }
    Some(shown)
}

fn parse_item(item: &Value) -> Result<FeedItem, Fault> {
    let Value::Object(item) = item else {
        return Err(Fault::new(
            "",
            format!("expected an object, found {}", kind(item)),
        ));
    };
    let data = match item.get("data") {
        Some(Value::Array(data)) => data,
        Some(other) => return Err(expected("data", "a list", other)),
        None => return Err(Fault::new("data", "missing")),
    };
    let data = match data.first() {
        Some(Value::Object(data)) => data,
        Some(other) => return Err(expected("data[0]", "an object", other)),
        None => return Err(Fault::new("data", "empty list")),
    };
    let nasa_id = required_string(data, "nasa_id")?;
    let title = required_string(data, "title")?;
    let media_type = required_string(data, "media_type")?;
    if media_type != "image" {
        let message = format!("media_type {media_type}: only images are fetched");
        return Err(Fault::new("data[0].media_type", message));
    }
    Ok(FeedItem {
        id: asset_id(&nasa_id),
        description: optional_string(data, "description")?,
        date_created: optional_string(data, "date_created")?,
        keywords: keywords(data)?,
        center: optional_string(data, "center")?,
        href: href(item)?,
        nasa_id,
        title,
        media_type,
    })
}

fn required_string(data: &Map<String, Value>, key: &str) -> Result<String, Fault> {
    let field = format!("data[0].{key}");
    match data.get(key) {
        None | Some(Value::Null) => Err(Fault::new(field, "missing")),
        Some(Value::String(s)) if s.trim().is_empty() => Err(Fault::new(field, "empty")),
        Some(Value::String(s)) => checked_len(&field, s),
        Some(other) => Err(expected(&field, "a string", other)),
    }
}

fn optional_string(data: &Map<String, Value>, key: &str) -> Result<String, Fault> {
    let field = format!("data[0].{key}");
    match data.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => checked_len(&field, s),
        Some(other) => Err(expected(&field, "a string", other)),
    }
}

fn checked_len(field: &str, s: &str) -> Result<String, Fault> {
    if s.len() > MAX_FIELD_BYTES {
        let message = format!("longer than {MAX_FIELD_BYTES} bytes");
        return Err(Fault::new(field, message));
    }
    Ok(s.to_owned())
}

fn keywords(data: &Map<String, Value>) -> Result<Vec<String>, Fault> {
    let list = match data.get("keywords") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(other) => return Err(expected("data[0].keywords", "a list", other)),
    };
    if list.len() > MAX_KEYWORDS {
        let message = format!("more than {MAX_KEYWORDS} keywords");
        return Err(Fault::new("data[0].keywords", message));
    }
    list.iter()
        .enumerate()
        .map(|(i, keyword)| {
            let field = format!("data[0].keywords[{i}]");
            match keyword {
                Value::String(s) => checked_len(&field, s),
                other => Err(expected(&field, "a string", other)),
            }
        })
        .collect()
}

/// The item's image URL: the best of its links with a usable `href`.
fn href(item: &Map<String, Value>) -> Result<String, Fault> {
    let links = match item.get("links") {
        Some(Value::Array(links)) => links,
        Some(other) => return Err(expected("links", "a list", other)),
        None => return Err(Fault::new("links", "missing")),
    };
    // (href, render, rel) of each usable link; the first problem explains an empty list.
    let mut usable = Vec::new();
    let mut problem = None;
    for (i, link) in links.iter().enumerate() {
        match usable_link(link) {
            Ok(found) => usable.push(found),
            Err(message) => {
                problem.get_or_insert_with(|| format!("links[{i}]: {message}"));
            }
        }
    }
    let best = usable
        .iter()
        .find(|link| link.1 == Some("image"))
        .or_else(|| usable.iter().find(|link| link.2 == Some("preview")))
        .or_else(|| usable.first());
    match (best, problem) {
        (Some(link), _) => Ok(link.0.clone()),
        (None, Some(problem)) => Err(Fault::new("links", format!("no usable link ({problem})"))),
        (None, None) => Err(Fault::new("links", "empty list")),
    }
}

/// A link's checked `href` and its `render` and `rel`, or why the link is unusable.
fn usable_link(link: &Value) -> Result<(String, Option<&str>, Option<&str>), String> {
    let Value::Object(link) = link else {
        return Err(format!("expected an object, found {}", kind(link)));
    };
    let href = match link.get("href") {
        Some(Value::String(href)) => href.trim(),
        Some(other) => return Err(format!("href: expected a string, found {}", kind(other))),
        None => return Err("no href".to_owned()),
    };
    check_url(href).map_err(|message| format!("href: {message}"))?;
    // Spaces appear in some real feeds' URLs; HTTP needs them escaped.
    let href = href.replace(' ', "%20");
    let render = link.get("render").and_then(Value::as_str);
    let rel = link.get("rel").and_then(Value::as_str);
    Ok((href, render, rel))
}

/// Checks that `href` is an `http`, `https` or `file` URL with something after the scheme.
fn check_url(href: &str) -> Result<(), String> {
    if href.len() > MAX_FIELD_BYTES {
        return Err(format!("longer than {MAX_FIELD_BYTES} bytes"));
    }
    if href.chars().any(char::is_control) {
        return Err("contains control characters".to_owned());
    }
    let Some((scheme, rest)) = href.split_once("://") else {
        return Err(format!("{href:?} is not an absolute URL"));
    };
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https" | "file") {
        return Err(format!("scheme {scheme:?} is not http, https or file"));
    }
    if rest.is_empty() {
        return Err(format!("{href:?} has nothing after the scheme"));
    }
    Ok(())
}

fn expected(field: &str, what: &str, found: &Value) -> Fault {
    Fault::new(field, format!("expected {what}, found {}", kind(found)))
}

/// A JSON value's kind, for messages: "a number", "a list", ...
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A valid item with `nasa_id`; tests change one field of it.
    fn item(nasa_id: &str) -> Value {
        json!({
            "href": format!("https://images-assets.nasa.gov/image/{nasa_id}/collection.json"),
            "data": [{
                "nasa_id": nasa_id,
                "title": format!("Title of {nasa_id}"),
                "description": "A picture.",
                "date_created": "1999-05-04T00:00:00Z",
                "keywords": ["Mars", "Rover"],
                "center": "JPL",
                "media_type": "image"
            }],
            "links": [
                {"href": format!("https://images-assets.nasa.gov/image/{nasa_id}/{nasa_id}~thumb.jpg"),
                 "rel": "preview", "render": "image"}
            ]
        })
    }

    fn document(items: Vec<Value>) -> Vec<u8> {
        let doc = json!({"collection": {"version": "1.0", "href": "x", "items": items}});
        serde_json::to_vec(&doc).unwrap()
    }

    fn parse_items(items: Vec<Value>) -> Parsed {
        parse(&document(items)).unwrap()
    }

    /// Parses one item and returns its error as displayed ("" if it was accepted).
    fn check_error(item: Value, expected: &str) {
        let parsed = parse_items(vec![item]);
        let got = parsed.errors.first().map(ToString::to_string);
        assert_eq!(got.as_deref(), Some(expected), "items: {:?}", parsed.items);
        assert!(parsed.items.is_empty());
    }

    #[test]
    fn a_valid_item_is_parsed_whole() {
        let parsed = parse_items(vec![item("PIA00001")]);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(
            parsed.items,
            vec![FeedItem {
                id: "PIA00001".to_owned(),
                nasa_id: "PIA00001".to_owned(),
                title: "Title of PIA00001".to_owned(),
                description: "A picture.".to_owned(),
                date_created: "1999-05-04T00:00:00Z".to_owned(),
                keywords: vec!["Mars".to_owned(), "Rover".to_owned()],
                center: "JPL".to_owned(),
                media_type: "image".to_owned(),
                href: "https://images-assets.nasa.gov/image/PIA00001/PIA00001~thumb.jpg".to_owned(),
            }]
        );
    }

    #[test]
    fn a_real_nasa_search_response_parses() {
        // Shape of a response of images-api.nasa.gov/search, trimmed to two items.
        let doc = br#"{"collection":{"version":"1.0","href":"http://images-api.nasa.gov/search?q=apollo%2011",
          "items":[
            {"href":"https://images-assets.nasa.gov/image/as11-40-5874/collection.json",
             "data":[{"center":"JSC","title":"Apollo 11 Mission image - Astronaut Edwin Aldrin poses beside th",
               "nasa_id":"as11-40-5874","date_created":"1969-07-20T00:00:00Z",
               "keywords":["APOLLO 11 FLIGHT","MOON","LUNAR SURFACE"],"media_type":"image",
               "description_508":"Apollo 11 Mission image","description":"Apollo 11 Mission image - Astronaut Edwin Aldrin"}],
             "links":[{"href":"https://images-assets.nasa.gov/image/as11-40-5874/as11-40-5874~thumb.jpg","rel":"preview","render":"image"}]},
            {"href":"https://images-assets.nasa.gov/video/Apollo11Overview/collection.json",
             "data":[{"center":"HQ","title":"Apollo 11 Overview","nasa_id":"Apollo 11 Overview","media_type":"video",
               "date_created":"2013-05-15T00:00:00Z"}],
             "links":[{"href":"https://images-assets.nasa.gov/video/Apollo 11 Overview/Apollo 11 Overview~thumb.jpg","rel":"preview","render":"image"}]}
          ],
          "metadata":{"total_hits":336},
          "links":[{"rel":"next","prompt":"Next","href":"http://images-api.nasa.gov/search?q=apollo%2011&page=2"}]}}"#;
        let parsed = parse(doc).unwrap();
        assert_eq!(parsed.items.len(), 1);
        assert_eq!(parsed.items[0].id, "as11-40-5874");
        assert_eq!(parsed.items[0].keywords.len(), 3);
        assert_eq!(
            parsed.errors[0].to_string(),
            "item 1 (Apollo 11 Overview): data[0].media_type: media_type video: only images are fetched"
        );
    }

    #[test]
    fn optional_fields_may_be_absent_or_null() {
        let mut bare = item("A1");
        let data = bare["data"][0].as_object_mut().unwrap();
        data.remove("description");
        data.remove("keywords");
        data.insert("center".to_owned(), Value::Null);
        data.remove("date_created");
        let parsed = parse_items(vec![bare]);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let got = &parsed.items[0];
        assert_eq!(
            (
                &got.description[..],
                &got.keywords[..],
                &got.center[..],
                &got.date_created[..]
            ),
            ("", &[][..], "", "")
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "title",
                json!(42),
                "item 0 (X): data[0].title: expected a string, found a number",
            ),
            ("title", json!("  "), "item 0 (X): data[0].title: empty"),
            ("title", Value::Null, "item 0 (X): data[0].title: missing"),
            (
                "nasa_id",
                json!(7),
                "item 0: data[0].nasa_id: expected a string, found a number",
            ),
            ("nasa_id", json!(""), "item 0: data[0].nasa_id: empty"),
            (
                "media_type",
                json!("video"),
                "item 0 (X): data[0].media_type: media_type video: only images are fetched",
            ),
            (
                "media_type",
                Value::Null,
                "item 0 (X): data[0].media_type: missing",
            ),
            (
                "description",
                json!(["a"]),
                "item 0 (X): data[0].description: expected a string, found a list",
            ),
            (
                "date_created",
                json!(1999),
                "item 0 (X): data[0].date_created: expected a string, found a number",
            ),
            (
                "center",
                json!({}),
                "item 0 (X): data[0].center: expected a string, found an object",
            ),
            (
                "keywords",
                json!("Mars, Rover"),
                "item 0 (X): data[0].keywords: expected a list, found a string",
            ),
            (
                "keywords",
                json!(["Mars", true]),
                "item 0 (X): data[0].keywords[1]: expected a string, found a boolean",
            ),
            (
                "description",
                json!("x".repeat(MAX_FIELD_BYTES + 1)),
                "item 0 (X): data[0].description: longer than 65536 bytes",
            ),
        ];
        for (key, value, expected) in cases {
            let mut bad = item("X");
            bad["data"][0][key] = value;
            check_error(bad, expected);
        }
    }

    #[test]
    fn a_missing_field_is_named() {
        for key in ["nasa_id", "title", "media_type"] {
            let mut bad = item("X");
            bad["data"][0].as_object_mut().unwrap().remove(key);
            let who = if key == "nasa_id" { "" } else { " (X)" };
            check_error(bad, &format!("item 0{who}: data[0].{key}: missing"));
        }
    }

    #[test]
    fn bad_structure_of_an_item_is_named() {
        let cases: Vec<(Value, &str)> = vec![
            (json!("PIA1"), "item 0: expected an object, found a string"),
            (json!({"links": []}), "item 0: data: missing"),
            (
                json!({"data": {}}),
                "item 0: data: expected a list, found an object",
            ),
            (json!({"data": []}), "item 0: data: empty list"),
            (
                json!({"data": [3]}),
                "item 0: data[0]: expected an object, found a number",
            ),
        ];
        for (bad, expected) in cases {
            check_error(bad, expected);
        }
    }

    #[test]
    fn links_are_checked_and_the_best_is_chosen() {
        let cases: Vec<(Value, Result<&str, &str>)> = vec![
            (Value::Null, Err("item 0 (X): links: missing")),
            (
                json!({}),
                Err("item 0 (X): links: expected a list, found an object"),
            ),
            (json!([]), Err("item 0 (X): links: empty list")),
            (
                json!([{"href": "ftp://h/x.jpg"}]),
                Err(
                    r#"item 0 (X): links: no usable link (links[0]: href: scheme "ftp" is not http, https or file)"#,
                ),
            ),
            (
                json!([{"rel": "preview"}, {"href": 5}]),
                Err("item 0 (X): links: no usable link (links[0]: no href)"),
            ),
            (
                json!([{"href": "x.jpg"}]),
                Err(
                    r#"item 0 (X): links: no usable link (links[0]: href: "x.jpg" is not an absolute URL)"#,
                ),
            ),
            (
                json!([{"href": "http://h/a\nb"}]),
                Err(
                    "item 0 (X): links: no usable link (links[0]: href: contains control characters)",
                ),
            ),
            (
                json!(["http://h/a", {"href": "http://h/b"}]),
                Ok("http://h/b"),
            ),
            (
                json!([{"href": "http://h/a", "rel": "canonical"},
                       {"href": "http://h/b", "rel": "preview"},
                       {"href": "http://h/c", "rel": "alternate", "render": "image"}]),
                Ok("http://h/c"),
            ),
            (
                json!([{"href": "http://h/a", "rel": "captions"},
                       {"href": "http://h/b", "rel": "preview"}]),
                Ok("http://h/b"),
            ),
            (
                json!([{"href": "ftp://h/a", "render": "image"}, {"href": "FILE:///tmp/b.png"}]),
                Ok("FILE:///tmp/b.png"),
            ),
            (
                json!([{"href": " https://h/a b.jpg "}]),
                Ok("https://h/a%20b.jpg"),
            ),
        ];
        for (links, expected) in cases {
            let mut it = item("X");
            if links.is_null() {
                it.as_object_mut().unwrap().remove("links");
            } else {
                it["links"] = links;
            }
            let parsed = parse_items(vec![it]);
            let got = match (parsed.items.first(), parsed.errors.first()) {
                (Some(item), None) => Ok(item.href.as_str()),
                (None, Some(err)) => Err(err.to_string()),
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(got, expected.map_err(str::to_owned));
        }
    }

    #[test]
    fn one_bad_item_never_rejects_the_others() {
        let mut bad = item("B");
        bad["data"][0]["title"] = json!(3);
        let parsed = parse_items(vec![item("A"), bad, json!(null), item("C")]);
        let ids: Vec<_> = parsed.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["A", "C"]);
        let errors: Vec<_> = parsed
            .errors
            .iter()
            .map(|e| (e.index, e.field.as_str()))
            .collect();
        assert_eq!(errors, [(1, "data[0].title"), (2, "")]);
    }

    #[test]
    fn a_duplicate_nasa_id_keeps_the_first() {
        let mut second = item("A");
        second["data"][0]["title"] = json!("Second");
        let parsed = parse_items(vec![item("A"), item("B"), second]);
        assert_eq!(parsed.items.len(), 2);
        assert_eq!(parsed.items[0].title, "Title of A");
        assert_eq!(
            parsed.errors[0].to_string(),
            "item 2 (A): data[0].nasa_id: duplicate of item 0"
        );
    }

    #[test]
    fn an_id_collision_is_an_error() {
        // A feed can name an asset with exactly the id another one cleans to.
        let crafted = asset_id("a b");
        let parsed = parse_items(vec![item("a b"), item(&crafted)]);
        assert_eq!(parsed.items.len(), 1);
        assert_eq!(
            parsed.errors[0].message,
            format!("its id {crafted} collides with item 0's")
        );
    }

    #[test]
    fn documents_that_are_not_feeds_are_rejected() {
        let cases: Vec<(&[u8], &str)> = vec![
            (
                b"",
                "feed is not JSON: EOF while parsing a value at line 1 column 0",
            ),
            (
                b"<html>\n<body>",
                "feed is not JSON: expected value at line 1 column 1",
            ),
            (
                b"{\"collection\": {\"items\": [1,]}}",
                "feed is not JSON: trailing comma at line 1 column 29",
            ),
            (
                b"[1, 2]",
                "feed has the wrong shape: expected an object with collection.items, found a list",
            ),
            (b"{}", "feed has the wrong shape: no collection.items list"),
            (
                b"{\"collection\": []}",
                "feed has the wrong shape: collection: expected an object, found a list",
            ),
            (
                b"{\"collection\": {}}",
                "feed has the wrong shape: no collection.items list",
            ),
            (
                b"{\"collection\": {\"items\": {}}}",
                "feed has the wrong shape: collection.items: expected a list, found an object",
            ),
        ];
        for (doc, expected) in cases {
            assert_eq!(parse(doc).unwrap_err().to_string(), expected);
        }
        assert_eq!(
            parse(b"{\n  \"a\": x\n}").unwrap_err(),
            FeedError::NotJson {
                line: 2,
                column: 8,
                message: "expected value".to_owned()
            }
        );
    }

    #[test]
    fn an_empty_item_list_is_an_empty_feed() {
        assert_eq!(parse(&document(vec![])).unwrap(), Parsed::default());
    }

    /// True if `id` follows the rules of [`asset_id`].
    fn is_safe(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= MAX_ID_BYTES
            && !id.starts_with(['.', '-'])
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    }

    #[test]
    fn safe_ids_are_kept() {
        for id in [
            "PIA00001",
            "as11-40-5874",
            "KSC_2021.jpg",
            "a",
            &"x".repeat(80),
        ] {
            assert_eq!(asset_id(id), id);
        }
    }

    #[test]
    fn unsafe_ids_are_cleaned_and_hashed() {
        let hash = |s: &str| blake3::hash(s.as_bytes()).to_hex()[..8].to_owned();
        let cases = [
            ("../../x", format!("_._.._x-{}", hash("../../x"))),
            ("", format!("_-{}", hash(""))),
            (".", format!("_-{}", hash("."))),
            ("..", format!("_.-{}", hash(".."))),
            (".hidden", format!("_hidden-{}", hash(".hidden"))),
            ("-rf", format!("_rf-{}", hash("-rf"))),
            ("a/b\\c", format!("a_b_c-{}", hash("a/b\\c"))),
            (
                "Apollo 11  Overview",
                format!("Apollo_11_Overview-{}", hash("Apollo 11  Overview")),
            ),
            ("été", format!("_t_-{}", hash("été"))),
            ("a\0b", format!("a_b-{}", hash("a\0b"))),
        ];
        for (input, expected) in cases {
            let id = asset_id(input);
            assert_eq!(id, expected, "{input:?}");
            assert!(is_safe(&id), "{id:?}");
        }
    }

    #[test]
    fn long_ids_are_cut_and_hashed() {
        let long = "y".repeat(81);
        let id = asset_id(&long);
        assert_eq!(id.len(), MAX_ID_BYTES);
        assert!(id.starts_with(&"y".repeat(71)), "{id}");
        assert!(is_safe(&id));
        let wide = "é".repeat(500);
        assert!(is_safe(&asset_id(&wide)));
    }

    #[test]
    fn ids_that_clean_alike_stay_apart() {
        let inputs = ["a b", "a/b", "a?b", "a  b", "a_b", "a\tb", "a b ", "../a b"];
        let mut ids: Vec<_> = inputs.iter().map(|s| asset_id(s)).collect();
        assert!(ids.iter().all(|id| is_safe(id)));
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), inputs.len(), "{ids:?}");
    }
}
