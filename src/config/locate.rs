//! Maps a key path (`contacts.pagination.stop[0]`) to a line and column of a YAML file,
//! by walking the file's marked parse events. Cross-file and semantic checks know a key
//! but not where it was written; this gives their diagnostics a real position.
//!
//! Never guesses: a path that is not in the file falls back to its longest present
//! prefix (the block where the key is missing), and a file that does not parse gives
//! `None`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Key path -> 1-based (line, column) of the key (mapping entries) or of the item
/// (sequence entries). The root is the empty path.
#[derive(Debug, Default, Clone)]
pub struct Locator {
    positions: HashMap<String, (usize, usize)>,
}

enum Frame {
    /// In a mapping: the path of the mapping, and the key just read (waiting for its
    /// value) if any.
    Map {
        path: String,
        pending_key: Option<String>,
    },
    /// In a sequence: the path and the next index.
    Seq { path: String, next: usize },
}

struct Receiver {
    stack: Vec<Frame>,
    positions: HashMap<String, (usize, usize)>,
}

fn position(mark: &Marker) -> (usize, usize) {
    (mark.line(), mark.col() + 1)
}

impl Receiver {
    /// The path of a value starting here, registering sequence items as they start.
    fn value_path(&mut self, mark: Option<&Marker>) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, pending_key }) => {
                pending_key.take().map(|key| join(path, &key))
            }
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
                if let Some(Frame::Map { path, pending_key }) = self.stack.last_mut()
                    && pending_key.is_none()
                {
                    let key_path = join(path, &text);
                    // A mapping's own marker points past its first key; the mapping is
                    // where its first key is.
                    self.positions
                        .entry(path.clone())
                        .or_insert(position(&mark));
                    self.positions.entry(key_path).or_insert(position(&mark));
                    *pending_key = Some(text);
                    return;
                }
                let _ = self.value_path(Some(&mark));
            }
            Event::Alias(_) => {
                let _ = self.value_path(Some(&mark));
            }
            Event::MappingStart(..) => {
                let path = self.value_path(None).unwrap_or_else(|| "?".into());
                self.stack.push(Frame::Map {
                    path,
                    pending_key: None,
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

impl Locator {
    /// Reads `text`; a file that does not parse gives an empty locator.
    pub fn new(text: &str) -> Locator {
        let mut receiver = Receiver {
            stack: Vec::new(),
            positions: HashMap::new(),
        };
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut receiver, false).is_err() {
            return Locator::default();
        }
        Locator {
            positions: receiver.positions,
        }
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
    fn missing_keys_fall_back_to_their_block() {
        let l = Locator::new(TEXT);
        assert_eq!(l.find("contacts.pagination.has_more"), Some((5, 3)));
        assert_eq!(l.find("nothing.here"), Some((1, 1)));
        assert_eq!(Locator::new("").find("x"), None);
    }
}
