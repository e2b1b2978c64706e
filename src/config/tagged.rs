//! Streaming deserializers for the spec's tagged blocks (`type:`, `mode:`, `at:`) and
//! single-key blocks (`{env: NAME}`, `{json: ...}`).
//!
//! serde's derived `#[serde(tag = ...)]` and `#[serde(flatten)]` buffer the whole map
//! first, and with `serde_yaml` an error inside comes back with no key path and a bogus
//! `1:1` position. These impls read the tag as the first key and hand the *same* map to
//! the variant's own struct, so each error keeps its key and line. The YAML surface and
//! the public Rust shapes stay those of `spec.rs`; the derived `Serialize` and
//! `JsonSchema` (which read the same serde attributes) still describe them.
//!
//! Everything here only shapes data: no validation beyond what serde does.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use crate::config::spec::{
    ApiKeyLocation, AuthSpec, BodySpec, ClientAuth, FilterApply, FilterOp, PageCommon,
    PaginationSpec, RequestSpec, SecretRef, StopRule, SyncSpec,
};
use crate::duration::IsoDuration;

/// Reads a variant name (a tag's value, or the key of a single-key block) and refuses
/// unknown ones while the deserializer still points at it, so the error carries that
/// key path and position.
struct VariantSeed(&'static [&'static str]);

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

/// Implements `Deserialize` for a tagged enum: `tag` must be the first key; each variant
/// name maps to a body struct (denying unknown keys) convertible into the enum.
macro_rules! type_tagged {
    ($enum:ty, tag = $tag:literal, { $($name:literal => $body:ty),+ $(,)? }) => {
        impl<'de> serde::Deserialize<'de> for $enum {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                const VARIANTS: &[&str] = &[$($name),+];
                struct TaggedVisitor;
                impl<'de> Visitor<'de> for TaggedVisitor {
                    type Value = $enum;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(
                            f,
                            "a mapping whose first key is `{}` (one of {})",
                            $tag,
                            VARIANTS.join(", ")
                        )
                    }

                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$enum, A::Error> {
                        match map.next_key::<String>()?.as_deref() {
                            Some($tag) => {}
                            Some(other) => {
                                return Err(de::Error::custom(format!(
                                    "`{}` must be the first key of this block (found `{other}` first)",
                                    $tag
                                )));
                            }
                            None => return Err(de::Error::missing_field($tag)),
                        }
                        let kind = map.next_value_seed(VariantSeed(VARIANTS))?;
                        let rest = de::value::MapAccessDeserializer::new(map);
                        match kind.as_str() {
                            $($name => <$body>::deserialize(rest).map(Into::into),)+
                            other => Err(de::Error::unknown_variant(other, VARIANTS)),
                        }
                    }
                }
                deserializer.deserialize_map(TaggedVisitor)
            }
        }
    };
}

/// Declares a variant's body struct (same keys, unknown keys denied) and its conversion
/// into the enum variant.
macro_rules! variant_body {
    ($body:ident => $enum:ident :: $variant:ident { $( $(#[$attr:meta])* $field:ident : $ty:ty ),* $(,)? }) => {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $body {
            $( $(#[$attr])* $field: $ty, )*
        }

        impl From<$body> for $enum {
            fn from(body: $body) -> $enum {
                let _ = &body;
                $enum::$variant { $( $field: body.$field, )* }
            }
        }
    };
}

// --- auth -------------------------------------------------------------------------------

variant_body!(AuthNone => AuthSpec::None {});
variant_body!(AuthApiKey => AuthSpec::ApiKey {
    #[serde(rename = "in")]
    location: ApiKeyLocation,
    name: String,
    value: String,
});
variant_body!(AuthBearer => AuthSpec::Bearer { token: String });
variant_body!(AuthBasic => AuthSpec::Basic {
    username: String,
    #[serde(default)]
    password: Option<String>,
});
variant_body!(AuthOauth2 => AuthSpec::Oauth2 {
    token_url: String,
    client_id: String,
    client_secret: String,
    refresh_token: String,
    #[serde(default)]
    client_auth: Option<ClientAuth>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    rotates_refresh_token: bool,
});
variant_body!(AuthSession => AuthSpec::Session {
    login: RequestSpec,
    token: String,
    #[serde(default)]
    ttl: Option<IsoDuration>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    query: BTreeMap<String, String>,
});
variant_body!(AuthHeader => AuthSpec::Header {
    headers: BTreeMap<String, String>,
});

type_tagged!(AuthSpec, tag = "type", {
    "none" => AuthNone,
    "api_key" => AuthApiKey,
    "bearer" => AuthBearer,
    "basic" => AuthBasic,
    "oauth2" => AuthOauth2,
    "session" => AuthSession,
    "header" => AuthHeader,
});

// --- pagination -------------------------------------------------------------------------

/// Declares a pagination body: its own keys plus `PageCommon`'s, inlined (no `flatten`,
/// which would buffer the map and lose positions).
macro_rules! page_body {
    ($body:ident => $variant:ident { $( $(#[$attr:meta])* $field:ident : $ty:ty ),* $(,)? }) => {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $body {
            $( $(#[$attr])* $field: $ty, )*
            #[serde(default)]
            stop: Vec<StopRule>,
            #[serde(default)]
            has_more: Option<String>,
            #[serde(default)]
            total: Option<String>,
            #[serde(default)]
            total_pages: Option<String>,
            #[serde(default)]
            max_pages: Option<u64>,
        }

        impl From<$body> for PaginationSpec {
            fn from(body: $body) -> PaginationSpec {
                PaginationSpec::$variant {
                    $( $field: body.$field, )*
                    common: PageCommon {
                        stop: body.stop,
                        has_more: body.has_more,
                        total: body.total,
                        total_pages: body.total_pages,
                        max_pages: body.max_pages,
                    },
                }
            }
        }
    };
}

variant_body!(PageNone => PaginationSpec::None {});
page_body!(PagePageNumber => PageNumber {
    #[serde(default)]
    start: Option<u64>,
});
page_body!(PageOffset => Offset {
    #[serde(default)]
    start: Option<u64>,
});
page_body!(PageCursor => Cursor { cursor: String });
page_body!(PageNextUrl => NextUrl {
    next_url: String,
    #[serde(default)]
    verbatim: Option<bool>,
});
page_body!(PageLinkHeader => LinkHeader {});
page_body!(PageKeyset => Keyset {});

type_tagged!(PaginationSpec, tag = "type", {
    "none" => PageNone,
    "page_number" => PagePageNumber,
    "offset" => PageOffset,
    "cursor" => PageCursor,
    "next_url" => PageNextUrl,
    "link_header" => PageLinkHeader,
    "keyset" => PageKeyset,
});

// --- sync and filters -------------------------------------------------------------------

variant_body!(SyncIncremental => SyncSpec::Incremental {
    #[serde(default)]
    since_format: Option<String>,
    #[serde(default)]
    lookback: Option<IsoDuration>,
    #[serde(default)]
    full_refresh_every: Option<IsoDuration>,
});
variant_body!(SyncFullRefresh => SyncSpec::FullRefresh {
    #[serde(default)]
    every: Option<IsoDuration>,
});

type_tagged!(SyncSpec, tag = "mode", {
    "incremental" => SyncIncremental,
    "full_refresh" => SyncFullRefresh,
});

variant_body!(ApplyServer => FilterApply::Server {});
variant_body!(ApplyClient => FilterApply::Client { field: String, op: FilterOp });

type_tagged!(FilterApply, tag = "at", {
    "server" => ApplyServer,
    "client" => ApplyClient,
});

// --- single-key blocks ------------------------------------------------------------------

/// Reads a mapping of exactly one key, the variant name, and passes its value to
/// `variant`. A bare scalar gets `scalar_message`.
fn single_key<'de, A, T>(
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

impl<'de> Deserialize<'de> for BodySpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const NAMES: &[&str] = &["json", "form", "template"];
        struct BodyVisitor;
        impl<'de> Visitor<'de> for BodyVisitor {
            type Value = BodySpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a body: {json: ...}, {form: {...}} or {template: \"...\"}")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<BodySpec, A::Error> {
                single_key(map, NAMES, "request body", |name, map| {
                    Ok(match name {
                        "json" => BodySpec::Json(map.next_value()?),
                        "form" => BodySpec::Form(map.next_value()?),
                        _ => BodySpec::Template(map.next_value()?),
                    })
                })
            }
        }
        deserializer.deserialize_map(BodyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load::parse_yaml;
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
            "f.yaml:3:10: pagination.start: invalid type: string \"two\", expected u64"
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
