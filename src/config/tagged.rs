//! Streaming deserializers for the spec's tagged blocks (`type:`, `mode:`, `at:`) and
//! single-key blocks (`{env: NAME}`, `{json: ...}`), and the two macros that declare
//! those enums in `spec.rs`, so that each variant's name and fields are written once.
//!
//! serde's derived `#[serde(tag = ...)]` and `#[serde(flatten)]` buffer the whole map
//! first, and with `serde_yaml` an error inside comes back with no key path and a bogus
//! `1:1` position. [`tagged_enum!`] reads the tag as the first key and hands the *same*
//! map to the variant's own struct (a plain derived `Deserialize` denying unknown keys),
//! so each error keeps its key and line; the derived `Serialize` and `JsonSchema` of the
//! declared enum describe the same YAML surface.
//!
//! Everything here only shapes data: no validation beyond what serde does. Never imports
//! `spec` (which uses these macros).

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use crate::secret::SecretRef;

/// Reads a variant name (a tag's value, or the key of a single-key block) and refuses
/// unknown ones while the deserializer still points at it, so the error carries that
/// key path and position.
#[doc(hidden)]
pub struct VariantSeed(pub &'static [&'static str]);

impl<'de> DeserializeSeed<'de> for VariantSeed {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        let value = String::deserialize(deserializer)?;
        if self.0.contains(&value.as_str()) {
            Ok(value)
        } else {
            Err(de::Error::unknown_variant(&value, self.0))
        }
    }
}

/// Reads the tag, which must be the first key of the block, and checks its value.
#[doc(hidden)]
pub fn read_tag<'de, A: MapAccess<'de>>(
    map: &mut A,
    tag: &'static str,
    variants: &'static [&'static str],
) -> Result<String, A::Error> {
    match map.next_key::<String>()?.as_deref() {
        Some(key) if key == tag => {}
        Some(other) => {
            return Err(de::Error::custom(format!(
                "`{tag}` must be the first key of this block (found `{other}` first)"
            )));
        }
        None => return Err(de::Error::missing_field(tag)),
    }
    map.next_value_seed(VariantSeed(variants))
}

/// Declares an enum tagged by a key (`type: cursor`) whose variants each wrap a struct
/// (deriving `Deserialize` with `deny_unknown_fields`) holding the variant's keys. The
/// enum gets `Serialize` and `JsonSchema` (internally tagged), a streaming `Deserialize`
/// that keeps positions, and `<&str>::from(&value)` giving the variant's name.
macro_rules! tagged_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident (tag = $tag:literal) {
            $( $(#[$vmeta:meta])* $key:literal => $variant:ident($body:ty) ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema, strum::IntoStaticStr)]
        #[serde(tag = $tag)]
        // A spec is read once per file and compiled away: variant sizes do not matter.
        #[allow(clippy::large_enum_variant)]
        $vis enum $name {
            $(
                $(#[$vmeta])*
                #[serde(rename = $key)]
                #[strum(serialize = $key)]
                $variant($body),
            )+
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                const VARIANTS: &[&str] = &[$($key),+];
                struct TaggedVisitor;
                impl<'de> serde::de::Visitor<'de> for TaggedVisitor {
                    type Value = $name;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(
                            f,
                            "a mapping whose first key is `{}` (one of {})",
                            $tag,
                            VARIANTS.join(", ")
                        )
                    }

                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$name, A::Error> {
                        let kind = $crate::config::tagged::read_tag(&mut map, $tag, VARIANTS)?;
                        let rest = serde::de::value::MapAccessDeserializer::new(map);
                        match kind.as_str() {
                            $($key => <$body as serde::Deserialize>::deserialize(rest)
                                .map($name::$variant),)+
                            other => Err(serde::de::Error::unknown_variant(other, VARIANTS)),
                        }
                    }
                }
                deserializer.deserialize_map(TaggedVisitor)
            }
        }
    };
}
pub(crate) use tagged_enum;

/// Declares an enum written as a mapping of exactly one key, the variant's name
/// (`{json: ...}`), each variant holding that key's value.
macro_rules! single_key_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident (what = $what:literal, expecting = $expecting:literal) {
            $( $(#[$vmeta:meta])* $key:literal => $variant:ident($body:ty) ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        $vis enum $name {
            $( $(#[$vmeta])* #[serde(rename = $key)] $variant($body), )+
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                const NAMES: &[&str] = &[$($key),+];
                struct SingleKeyVisitor;
                impl<'de> serde::de::Visitor<'de> for SingleKeyVisitor {
                    type Value = $name;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($expecting)
                    }

                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        map: A,
                    ) -> Result<$name, A::Error> {
                        $crate::config::tagged::single_key(map, NAMES, $what, |name, map| {
                            match name {
                                $($key => map.next_value::<$body>().map($name::$variant),)+
                                other => Err(serde::de::Error::unknown_variant(other, NAMES)),
                            }
                        })
                    }
                }
                deserializer.deserialize_map(SingleKeyVisitor)
            }
        }
    };
}
pub(crate) use single_key_enum;

/// Reads a mapping of exactly one key, the variant name, and passes its value to
/// `variant`. Used by [`single_key_enum!`] and by [`SecretRef`]'s deserializer.
#[doc(hidden)]
pub fn single_key<'de, A, T>(
    mut map: A,
    names: &'static [&'static str],
    what: &str,
    mut variant: impl FnMut(&str, &mut A) -> Result<T, A::Error>,
) -> Result<T, A::Error>
where
    A: MapAccess<'de>,
{
    let Some(name) = map.next_key_seed(VariantSeed(names))? else {
        return Err(de::Error::custom(format!(
            "an empty mapping is not a {what}; give one of {}",
            names.join(", ")
        )));
    };
    let value = variant(&name, &mut map)?;
    if let Some(extra) = map.next_key::<String>()? {
        return Err(de::Error::custom(format!(
            "a {what} has exactly one key ({}); `{extra}` is one too many",
            names.join(", ")
        )));
    }
    Ok(value)
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const NAMES: &[&str] = &["env", "file", "credential", "literal"];
        struct SecretVisitor;
        impl<'de> Visitor<'de> for SecretVisitor {
            type Value = SecretRef;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a reference: {env: NAME}, {file: PATH} or {credential: NAME}")
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(E::custom(
                    "a secret is given by reference ({env: NAME}, {file: PATH} or \
                     {credential: NAME}); a value written in this file must be marked \
                     {literal: VALUE}",
                ))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SecretRef, E> {
                self.visit_str(&v.to_string())
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SecretRef, E> {
                self.visit_str(&v.to_string())
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SecretRef, A::Error> {
                single_key(map, NAMES, "secret reference", |name, map| {
                    let value: String = map.next_value()?;
                    Ok(match name {
                        "env" => SecretRef::Env(value),
                        "file" => SecretRef::File(value),
                        "credential" => SecretRef::Credential(value),
                        _ => SecretRef::Literal(value),
                    })
                })
            }
        }
        deserializer.deserialize_any(SecretVisitor)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::read::parse_yaml;
    use crate::config::spec::{ImporterSpec, PaginationSpec};
    use std::path::Path;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Holder {
        pagination: PaginationSpec,
    }

    fn error_of<T: serde::de::DeserializeOwned + std::fmt::Debug>(text: &str) -> String {
        parse_yaml::<T>(text, Path::new("f.yaml")).unwrap_err()[0].to_string()
    }

    #[test]
    fn errors_inside_tagged_blocks_keep_key_and_position() {
        let text = "pagination:\n  type: page_number\n  stop: [empty_page]\n  strat: 2\n";
        assert_eq!(
            error_of::<Holder>(text),
            "f.yaml:4:3: pagination.strat: unknown field `strat`, expected one of `start`, `stop`, `has_more`, `total`, `total_pages`, `max_pages`"
        );
        let text = "pagination:\n  type: page_number\n  start: two\n";
        assert_eq!(
            error_of::<Holder>(text),
            "f.yaml:3:10: pagination.start: invalid type: string \"two\", expected a whole number (0 or more)"
        );
        let text = "pagination:\n  type: pages\n";
        assert_eq!(
            error_of::<Holder>(text),
            "f.yaml:2:3: pagination.type: unknown variant `pages`, expected one of `none`, `page_number`, `offset`, `cursor`, `next_url`, `link_header`, `keyset`"
        );
        let text = "pagination:\n  type: cursor\n  cursor: $.next\n  stop: [missing_tokn]\n";
        assert!(
            error_of::<Holder>(text)
                .starts_with("f.yaml:4:10: pagination.stop[0]: unknown variant `missing_tokn`"),
            "{}",
            error_of::<Holder>(text)
        );
    }

    #[test]
    fn bare_credentials_are_refused_with_a_clear_message() {
        let text = "connector: x\nlist: l\ncredentials:\n  api_key: abc123\n";
        assert_eq!(
            error_of::<ImporterSpec>(text),
            "f.yaml:4:12: credentials.api_key: a secret is given by reference ({env: NAME}, {file: PATH} or {credential: NAME}); a value written in this file must be marked {literal: VALUE}"
        );
        let ok = parse_yaml::<ImporterSpec>(
            "connector: x\nlist: l\ncredentials:\n  a: {env: A}\n  b: {literal: x}\n",
            Path::new("f.yaml"),
        )
        .unwrap();
        assert_eq!(ok.credentials.len(), 2);
        let text = "connector: x\nlist: l\ncredentials:\n  a: {env: A, file: B}\n";
        assert!(error_of::<ImporterSpec>(text).contains("one too many"));
    }
}
