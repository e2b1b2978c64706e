//! Maps a key path (`contacts.pagination.stop[0]`) to a line and column of a YAML file,
//! by walking the file's marked parse events. Cross-file and semantic checks know a key
//! but not where it was written; this gives their diagnostics a real position.
//!
//! Never guesses: a path that is not in the file falls back to its longest present
//! prefix (the block where the key is missing), and a file that does not parse gives
//! `None`.
//!
//! The same walk ([`scan`]) is the reader's first look at a file: it refuses nesting
//! deeper than [`MAX_DEPTH`] before any recursive parser sees it, finds keys given twice
//! in one mapping (serde would silently keep the last), and reads `spec_version`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// The deepest nesting of mappings and lists a file may have. Real files nest about
/// eight levels (a JSON request body a few more); a recursive parser given thousands
/// overflows its stack.
pub const MAX_DEPTH: usize = 64;

/// Key path -> 1-based (line, column) of the key (mapping entries) or of the item
/// (sequence entries). The root is the empty path.
#[derive(Debug, Default, Clone)]
pub struct Locator {
    positions: HashMap<String, (usize, usize)>,
}

enum Frame {
    /// In a mapping: the path of the mapping, the key just read (waiting for its value)
    /// if any, and where each key was written.
    Map {
        path: String,
        pending_key: Option<String>,
        keys: HashMap<String, (usize, usize)>,
    },
    /// In a sequence: the path and the next index.
    Seq { path: String, next: usize },
}

struct Receiver {
    stack: Vec<Frame>,
    positions: HashMap<String, (usize, usize)>,
    duplicates: Vec<DuplicateKey>,
    spec_version: Option<String>,
}

/// A key written twice in one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    /// Key path of the repeated key.
    pub path: String,
    /// Where it was first written.
    pub first: (usize, usize),
    /// Where it was written again.
    pub again: (usize, usize),
}

/// What the first walk over a file found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Key path -> position.
    pub locator: Locator,
    /// Keys written twice in one mapping, in file order.
    pub duplicates: Vec<DuplicateKey>,
    /// The root `spec_version` value, as written.
    pub spec_version: Option<String>,
}

/// Why a file could not be walked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    /// Not YAML: the parser's message and where.
    Syntax {
        /// What the parser says.
        message: String,
        /// 1-based line and column.
        position: (usize, usize),
    },
    /// Mappings and lists nested deeper than [`MAX_DEPTH`], where it went too deep.
    TooDeep((usize, usize)),
}

fn position(mark: &Marker) -> (usize, usize) {
    (mark.line(), mark.col() + 1)
}

impl Receiver {
    /// The path of a value starting here, registering sequence items as they start.
    fn value_path(&mut self, mark: Option<&Marker>) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map {
                path, pending_key, ..
            }) => pending_key.take().map(|key| join(path, &key)),
            Some(Frame::Seq { path, next }) => {
                let item = format!("{path}[{next}]");
                *next += 1;
                if let Some(mark) = mark {
                    self.positions.entry(item.clone()).or_insert(position(mark));
                }
                Some(item)
            }
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl MarkedEventReceiver for Receiver {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(text, ..) => {
                if let Some(Frame::Map {
                    path,
                    pending_key,
                    keys,
                }) = self.stack.last_mut()
                    && pending_key.is_none()
                {
                    let key_path = join(path, &text);
                    // A mapping's own marker points past its first key; the mapping is
                    // where its first key is.
                    self.positions
                        .entry(path.clone())
                        .or_insert(position(&mark));
                    self.positions
                        .entry(key_path.clone())
                        .or_insert(position(&mark));
                    if let Some(first) = keys.get(&text) {
                        self.duplicates.push(DuplicateKey {
                            path: key_path,
                            first: *first,
                            again: position(&mark),
                        });
                    } else {
                        keys.insert(text.clone(), position(&mark));
                    }
                    *pending_key = Some(text);
                    return;
                }
                if self.value_path(Some(&mark)).as_deref() == Some("spec_version") {
                    self.spec_version = Some(text);
                }
            }
            Event::Alias(_) => {
                let _ = self.value_path(Some(&mark));
            }
            Event::MappingStart(..) => {
                let path = self.value_path(None).unwrap_or_else(|| "?".into());
                self.stack.push(Frame::Map {
                    path,
                    pending_key: None,
                    keys: HashMap::new(),
                });
            }
            Event::SequenceStart(..) => {
                let path = self.value_path(Some(&mark)).unwrap_or_else(|| "?".into());
                self.positions
                    .entry(path.clone())
                    .or_insert(position(&mark));
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

/// Walks `text` once, event by event, stopping at the first syntax error or at nesting
/// deeper than [`MAX_DEPTH`] (without recursion, so any depth is safe to refuse).
///
/// # Errors
/// [`ScanError`] with the position where the walk stopped.
pub fn scan(text: &str) -> Result<Scan, ScanError> {
    let mut receiver = Receiver {
        stack: Vec::new(),
        positions: HashMap::new(),
        duplicates: Vec::new(),
        spec_version: None,
    };
    let mut parser = Parser::new_from_str(text);
    loop {
        let (event, mark) = parser.next_token().map_err(|error| {
            // The scanner reads ahead and stops flow nesting (`[[[...`) at 255 levels
            // before the events reach MAX_DEPTH: the same problem, said the same way.
            if error.info() == "recursion limit exceeded" {
                ScanError::TooDeep(position(error.marker()))
            } else {
                ScanError::Syntax {
                    message: error.info().to_string(),
                    position: position(error.marker()),
                }
            }
        })?;
        match event {
            Event::StreamEnd => break,
            // Only the first document is read, as serde does.
            Event::DocumentEnd => break,
            Event::MappingStart(..) | Event::SequenceStart(..)
                if receiver.stack.len() >= MAX_DEPTH =>
            {
                return Err(ScanError::TooDeep(position(&mark)));
            }
            event => receiver.on_event(event, mark),
        }
    }
    Ok(Scan {
        locator: Locator {
            positions: receiver.positions,
        },
        duplicates: receiver.duplicates,
        spec_version: receiver.spec_version,
    })
}

impl Locator {
    /// Reads `text`; a file that does not parse gives an empty locator.
    pub fn new(text: &str) -> Locator {
        scan(text).map(|scan| scan.locator).unwrap_or_default()
    }

    /// The exact position of `path`, if it was written.
    pub fn exact(&self, path: &str) -> Option<(usize, usize)> {
        self.positions.get(path).copied()
    }

    /// The position of `path`, or of its longest written prefix. `None` only when the
    /// file has no content at all.
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut current = path;
        loop {
            if let Some(found) = self.positions.get(current) {
                // The root mapping starts where its first key does; an empty file has none.
                return Some(*found);
            }
            if current.is_empty() {
                return None;
            }
            current = parent(current);
        }
    }
}

/// `a.b[2].c` -> `a.b[2]` -> `a.b` -> `a` -> ``.
pub fn parent(path: &str) -> &str {
    let dot = path.rfind('.');
    let bracket = path.rfind('[');
    match (dot, bracket) {
        (Some(d), Some(b)) => &path[..d.max(b)],
        (Some(d), None) => &path[..d],
        (None, Some(b)) => &path[..b],
        (None, None) => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
spec_version: 1
contacts:
  request:
    path: /persons
  pagination:
    type: cursor
    stop:
      - missing_token
      - empty_page
  fields:
    email: [$.a, $.b]
  custom_fields:
    - label: Tags
      path: $.tags
";

    #[test]
    fn finds_keys_and_items() {
        let l = Locator::new(TEXT);
        assert_eq!(l.exact("spec_version"), Some((1, 1)));
        assert_eq!(l.exact("contacts.request.path"), Some((4, 5)));
        assert_eq!(l.exact("contacts.pagination.type"), Some((6, 5)));
        assert_eq!(l.exact("contacts.pagination.stop[1]"), Some((9, 9)));
        assert_eq!(l.exact("contacts.fields.email[1]"), Some((11, 18)));
        assert_eq!(l.exact("contacts.custom_fields[0]"), Some((13, 7)));
        assert_eq!(l.exact("contacts.custom_fields[0].path"), Some((14, 7)));
    }

    #[test]
    fn the_walk_finds_keys_given_twice_and_refuses_deep_nesting() {
        let walked =
            scan("spec_version: 1\na:\n  b: 1\n  c: 2\n  b: 3\nquery: {x: 1, x: 2}\n").unwrap();
        assert_eq!(walked.spec_version.as_deref(), Some("1"));
        assert_eq!(
            walked.duplicates,
            [
                DuplicateKey {
                    path: "a.b".into(),
                    first: (3, 3),
                    again: (5, 3)
                },
                DuplicateKey {
                    path: "query.x".into(),
                    first: (6, 9),
                    again: (6, 15)
                }
            ]
        );
        let deep = format!("a: {}1{}\n", "[".repeat(200), "]".repeat(200));
        assert_eq!(scan(&deep).unwrap_err(), ScanError::TooDeep((1, 67)));
        assert!(matches!(
            scan(&"- ".repeat(100_000)),
            Err(ScanError::TooDeep(_))
        ));
    }

    #[test]
    fn missing_keys_fall_back_to_their_block() {
        let l = Locator::new(TEXT);
        assert_eq!(l.find("contacts.pagination.has_more"), Some((5, 3)));
        assert_eq!(l.find("nothing.here"), Some((1, 1)));
        assert_eq!(Locator::new("").find("x"), None);
    }
}
