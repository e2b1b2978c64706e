//! Property tests: every parser fed by a file or a service, given arbitrary input, returns
//! a value or an error value, never panics and never hangs.
//!
//! Each target runs [`cases`] generated inputs (10,000 unless `TRIBUTARY_PROPTEST_CASES`
//! says otherwise: a longer run for a release) inside a watchdog: a target that has not
//! finished within [`HANG_LIMIT`] fails as hung instead of blocking the suite. Each
//! prints its count and time (`--nocapture`); `docs/reliability.md` keeps the figures.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value};
use unicode_normalization::UnicodeNormalization;

use tributary::engine::client::parse_retry_after;
use tributary::engine::extract::Extractor;
use tributary::engine::paginate::link_next;
use tributary::jsonpath::JsonPath;
use tributary::model::{CustomFieldType, FieldBinding, FieldValue, normalize_email};
use tributary::template::{Escape, HELPERS, Template};
use tributary::timeformat::{TimeFormat, parse_zone};

/// A target that runs longer than this is taken as hung.
const HANG_LIMIT: Duration = Duration::from_secs(240);

/// Generated inputs per target.
fn cases() -> u32 {
    std::env::var("TRIBUTARY_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Runs `test` over `cases()` inputs of `strategy` on a thread of its own, failing on the
/// first input that fails (shrunk to a minimal one by proptest) or when it hangs.
///
/// `make` builds the strategy on that thread (recursive strategies are not `Send`).
fn check<S: Strategy + 'static>(
    name: &'static str,
    make: fn() -> S,
    test: fn(S::Value) -> Result<(), TestCaseError>,
) {
    let cases = cases();
    let (done, finished) = mpsc::channel();
    let started = Instant::now();
    std::thread::Builder::new()
        .name(format!("property {name}"))
        .stack_size(16 * 1024 * 1024)
        .spawn(move || {
            let mut runner = TestRunner::new(Config {
                cases,
                failure_persistence: None,
                // Shrinking a failure is bounded too, so a failing target ends.
                max_shrink_time: 60_000,
                ..Config::default()
            });
            let result = runner.run(&make(), test).map_err(|e| e.to_string());
            let _ = done.send(result);
        })
        .unwrap();
    match finished.recv_timeout(HANG_LIMIT) {
        Ok(Ok(())) => println!(
            "property {name}: {cases} cases passed in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
        Ok(Err(failure)) => panic!("property {name}: {failure}"),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("property {name}: no answer after {HANG_LIMIT:?} (hung)")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            panic!("property {name}: the target panicked outside a case")
        }
    }
}

// ------------------------------------------------------------------------------------
// Generators
// ------------------------------------------------------------------------------------

/// Text as services and people write it: words, numbers, dates, emails, control and
/// combining characters, anything Unicode.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9 ._@-]{0,16}",
        2 => any::<String>().prop_map(|s| s.chars().take(24).collect()),
        1 => "[0-9]{1,4}-[0-9]{1,2}-[0-9]{1,2}([T ][0-9]{1,2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:?[0-9]{2})?)?",
        1 => "-?[0-9]{1,20}(\\.[0-9]{0,6})?(e-?[0-9]{1,3})?",
        1 => prop::sample::select(vec![
            "", " ", "null", "true", "NaN", "inf", "-0", "1e400", "ß", "İ", "\u{301}",
            "\u{0}", "\u{202e}", "\u{feff}", "%", "%s", "%Y-%m-%d", "{{", "}}", "$", "@",
        ])
        .prop_map(str::to_string),
    ]
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "email", "emails", "id", "name", "first", "last", "updated", "data", "value",
            "primary", "tags", "tier", "score", "born", "deleted", "status", "next", "a", "b",
        ])
        .prop_map(str::to_string),
        1 => text(),
    ]
}

/// Arbitrary JSON, at most four levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((json_key(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

// ------------------------------------------------------------------------------------
// Email normalization
// ------------------------------------------------------------------------------------

fn local_part() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => "[a-zA-Z0-9._+-]{1,6}",
            1 => prop::sample::select(vec![
                "ß", "ẞ", "é", "e\u{301}", "É", "İ", "ı", "Σ", "ς", "ﬀ", "Å", "A\u{30a}", "ǅ",
            ])
            .prop_map(str::to_string),
            1 => any::<char>().prop_map(String::from),
        ],
        1..5,
    )
    .prop_map(|parts| parts.concat())
}

fn domain() -> impl Strategy<Value = String> {
    let label = prop_oneof![
        4 => "[a-zA-Z0-9-]{1,10}",
        1 => prop::sample::select(vec![
            "münchen", "MÜNCHEN", "mu\u{308}nchen", "xn--mnchen-3ya", "XN--MNCHEN-3YA",
            "bücher", "例え", "xn--r8jz45g", "straße", "xn--a", "xn--", "ß",
        ])
        .prop_map(str::to_string),
        1 => any::<String>().prop_map(|s| s.chars().take(6).collect()),
    ];
    prop::collection::vec(label, 1..4).prop_map(|labels| labels.join("."))
}

fn email_input() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (
            "[ \t]{0,2}",
            local_part(),
            domain(),
            "[ \t\n]{0,2}"
        )
            .prop_map(|(pre, local, domain, post)| format!("{pre}{local}@{domain}{post}")),
        1 => any::<String>(),
        1 => "[a-z@.]{0,12}",
    ]
}

fn check_email(raw: String) -> Result<(), TestCaseError> {
    let Some(normal) = normalize_email(&raw) else {
        return Ok(());
    };
    // One form: normalizing the normalized address changes nothing.
    prop_assert_eq!(normalize_email(&normal), Some(normal.clone()));
    prop_assert!(normal.nfc().eq(normal.chars()), "not NFC: {normal:?}");
    let (local, domain) = normal.rsplit_once('@').unwrap();
    // Never merges two mailboxes: the local part is the input's, only NFC and lower-cased.
    let (raw_local, raw_domain) = raw.trim().rsplit_once('@').unwrap();
    let expected_local: String = raw_local
        .nfc()
        .collect::<String>()
        .to_lowercase()
        .nfc()
        .collect();
    prop_assert_eq!(local, expected_local.as_str());
    // One mailbox has one form: decomposed, upper-cased ASCII, Punycode.
    let decomposed: String = raw.nfd().collect();
    prop_assert_eq!(normalize_email(&decomposed), Some(normal.clone()));
    if raw_local.is_ascii() {
        let shouted = format!("{}@{raw_domain}", raw_local.to_ascii_uppercase());
        prop_assert_eq!(normalize_email(&shouted), Some(normal.clone()));
    }
    let ascii_domain = idna::domain_to_ascii(domain)
        .map_err(|e| TestCaseError::fail(format!("stored domain {domain:?} is not IDNA: {e:?}")))?;
    let punycoded = format!("{local}@{ascii_domain}");
    prop_assert_eq!(normalize_email(&punycoded), Some(normal.clone()));
    Ok(())
}

#[test]
fn email_normalization() {
    check("email normalization", email_input, check_email);
}

// ------------------------------------------------------------------------------------
// JSONPath and value coercion
// ------------------------------------------------------------------------------------

fn jsonpath_text() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        3 => json_key().prop_map(|k| format!(".{k}")),
        1 => json_key().prop_map(|k| format!("['{}']", k.replace('\'', "\\'"))),
        1 => json_key().prop_map(|k| format!("..{k}")),
        1 => (-3i64..6).prop_map(|i| format!("[{i}]")),
        1 => Just("[*]".to_string()),
        1 => Just(".*".to_string()),
        1 => (-3i64..4, -3i64..4, prop_oneof![Just(1i64), Just(-1), Just(2), Just(0)])
            .prop_map(|(a, b, c)| format!("[{a}:{b}:{c}]")),
        1 => (json_key(), text()).prop_map(|(k, v)| format!("[?@.{k} == {}]", Value::String(v))),
        1 => (json_key(), any::<i32>()).prop_map(|(k, v)| format!("[?@.{k} > {v}]")),
        1 => json_key().prop_map(|k| format!("[?@.{k}]")),
        1 => json_key().prop_map(|k| format!("[?length(@.{k}) >= 1]")),
        1 => Just("[0,1]".to_string()),
        1 => "[\\[\\]?@.*'\"=<>!&|()0-9a-z:, -]{1,8}",
    ];
    prop_oneof![
        6 => prop::collection::vec(segment, 0..5).prop_map(|s| format!("${}", s.concat())),
        1 => any::<String>(),
    ]
}

#[test]
fn jsonpath_evaluation_over_arbitrary_json() {
    check(
        "jsonpath",
        || (jsonpath_text(), json()),
        |(source, value)| {
            match JsonPath::parse(&source) {
                Ok(path) => {
                    let all = path.query(&value);
                    prop_assert_eq!(path.first(&value), all.first().copied());
                    let mut visited = 0;
                    path.for_each(&value, |_| visited += 1);
                    prop_assert_eq!(visited, all.len());
                }
                Err(message) => prop_assert!(!message.is_empty()),
            }
            Ok(())
        },
    );
}

fn field_value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        text().prop_map(FieldValue::Text),
        any::<f64>().prop_map(FieldValue::Number),
        (-8_000_000_000_000i64..8_000_000_000_000)
            .prop_map(|s| FieldValue::Date(Utc.timestamp_opt(s, 0).unwrap())),
        prop::collection::vec(text(), 0..4).prop_map(FieldValue::List),
    ]
}

fn field_type() -> impl Strategy<Value = CustomFieldType> {
    prop::sample::select(vec![
        CustomFieldType::Text,
        CustomFieldType::Number,
        CustomFieldType::Date,
        CustomFieldType::List,
    ])
}

/// A connector reading every kind of value: names, emails from a list, a timestamp, a
/// subscription status, a deleted flag and one custom field of each type.
const COERCION_CONNECTOR: &str = r#"
spec_version: 1
service: coerce
base_url: https://coerce.example
contacts:
  request: {path: /people}
  pagination: {type: none}
  records: $.data[*]
  fields:
    email: ["$.emails[?@.primary==true].value", $.email, "$.emails[0]"]
    first_name: $.first
    last_name: $.last
    full_name: $.name
    phone: $.phone
    organization: $.org
    external_id: $.id
    updated_at: {path: $.updated, format: rfc3339}
  custom_fields:
    - {label: Tier, path: $.tier, type: text}
    - {label: Score, path: $.score, type: number}
    - {label: Born, path: $.born, type: date}
    - {label: Tags, path: $.tags, type: list}
  deleted: {path: $.deleted, equals: true}
  subscription:
    path: $.status
    map: {unsubscribed: unsubscribed, cleaned: bounced}
sync: {mode: full_refresh}
"#;

fn coercion_plan() -> tributary::plan::Plan {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("connectors.d")).unwrap();
    std::fs::create_dir_all(dir.path().join("importers.d")).unwrap();
    std::fs::write(dir.path().join("tributary.yaml"), "{}\n").unwrap();
    std::fs::write(
        dir.path().join("connectors.d/coerce.yaml"),
        COERCION_CONNECTOR,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("importers.d/coerce.yaml"),
        "connector: coerce\nlist: People\n",
    )
    .unwrap();
    tributary::config::load::load_plan(&dir.path().join("tributary.yaml")).unwrap_or_else(|d| {
        panic!(
            "{}",
            d.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

/// A record with the connector's keys holding arbitrary values (or arbitrary JSON).
fn record() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "email", "emails", "first", "last", "name", "phone", "org", "id", "updated", "tier",
        "score", "born", "tags", "deleted", "status",
    ]);
    prop_oneof![
        4 => prop::collection::vec((keys, json()), 0..10).prop_map(|entries| {
            Value::Object(entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        }),
        1 => json(),
    ]
}

#[test]
fn value_coercion_over_arbitrary_json() {
    check(
        "value coercion",
        || (field_value(), field_type()),
        |(value, to)| {
            if let Some(converted) = value.convert_to(to) {
                let matches = matches!(
                    (&converted, to),
                    (FieldValue::Text(_), CustomFieldType::Text)
                        | (FieldValue::Number(_), CustomFieldType::Number)
                        | (FieldValue::Date(_), CustomFieldType::Date)
                        | (FieldValue::List(_), CustomFieldType::List)
                );
                prop_assert!(matches, "{value:?} as {to:?} gave {converted:?}");
                let _ = converted.to_text();
            }
            let _ = value.to_text();
            Ok(())
        },
    );
    check(
        "record mapping",
        || (record(), prop::collection::vec(field_type(), 4)),
        |(record, stored_types)| {
            thread_local! {
                static PLAN: tributary::plan::Plan = coercion_plan();
            }
            PLAN.with(|plan| {
                let connector = &plan.importers["coerce"].connector;
                // The store's types may differ from the connector's (a person made the
                // field first): every pairing is tried.
                let bindings: Vec<FieldBinding> = connector
                    .custom_fields
                    .iter()
                    .zip(&stored_types)
                    .enumerate()
                    .map(|(i, (field, stored))| FieldBinding {
                        field_id: i as i64 + 1,
                        tag: field.def.tag.clone(),
                        stored_type: *stored,
                    })
                    .collect();
                let extractor = Extractor::new(connector, &bindings);
                let page = serde_json::json!({ "data": [record.clone()] });
                let records = extractor.records(&page).map_err(|e| {
                    TestCaseError::fail(format!("records of a page with data: {e:?}"))
                })?;
                // A record that is an array is read as the page's records (documented).
                if !record.is_array() {
                    prop_assert_eq!(records.len(), 1);
                }
                let out = extractor.map(&record);
                if let tributary::engine::extract::Mapped::Contact(contact, _) = &out.mapped {
                    prop_assert_eq!(normalize_email(&contact.email), Some(contact.email.clone()));
                }
                let _ = extractor.keyset(&record);
                Ok(())
            })
        },
    );
}

// ------------------------------------------------------------------------------------
// Templates
// ------------------------------------------------------------------------------------

fn template_text() -> impl Strategy<Value = String> {
    let var = prop::sample::select(vec![
        "credentials.key",
        "settings.base",
        "filters.owner",
        "since",
        "page",
        "cursor",
        "page_size",
        "now",
        "token.access_token",
        "missing.value",
        "this",
        "@root.page",
        "keyset.id",
        "offset",
    ]);
    let literal = prop_oneof![
        text().prop_map(|t| Value::String(t).to_string()),
        any::<i32>().prop_map(|n| n.to_string()),
        Just("true".to_string()),
        Just("null".to_string()),
    ];
    let argument = prop_oneof![
        3 => var.clone().prop_map(str::to_string),
        1 => literal,
    ];
    let element = prop_oneof![
        3 => "[a-zA-Z0-9 /?&=._-]{0,12}",
        3 => var.clone().prop_map(|v| format!("{{{{{v}}}}}")),
        2 => (prop::sample::select(HELPERS.to_vec()), prop::collection::vec(argument.clone(), 0..3))
            .prop_map(|(h, args)| format!("{{{{{h} {}}}}}", args.join(" "))),
        1 => (prop::sample::select(HELPERS.to_vec()), argument.clone(), argument.clone())
            .prop_map(|(h, a, b)| format!("{{{{default ({h} {a}) {b}}}}}")),
        1 => (var.clone(), "[a-z ]{0,6}", "[a-z ]{0,6}")
            .prop_map(|(v, a, b)| format!("{{{{#if {v}}}}}{a}{{{{else}}}}{b}{{{{/if}}}}")),
        1 => var.clone().prop_map(|v| format!("{{{{#each {v}}}}}{{{{this}}}},{{{{/each}}}}")),
        1 => var.prop_map(|v| format!("{{{{#with {v}}}}}{{{{this}}}}{{{{/with}}}}")),
        1 => "[{}#/a-z \"'().=@^~!>-]{1,10}",
    ];
    prop_oneof![
        8 => prop::collection::vec(element, 0..6).prop_map(|e| e.concat()),
        1 => any::<String>(),
    ]
}

fn template_context() -> impl Strategy<Value = Value> {
    (json(), json(), json(), json(), json()).prop_map(
        |(credentials, settings, since, page, token)| {
            let mut ctx = Map::new();
            ctx.insert(
                "credentials".into(),
                serde_json::json!({ "key": credentials }),
            );
            ctx.insert("settings".into(), serde_json::json!({ "base": settings }));
            ctx.insert(
                "filters".into(),
                serde_json::json!({ "owner": page.clone() }),
            );
            ctx.insert("since".into(), since);
            ctx.insert("page".into(), page.clone());
            ctx.insert("cursor".into(), page);
            ctx.insert("page_size".into(), Value::from(100));
            ctx.insert("now".into(), tributary::template::context_time(Utc::now()));
            ctx.insert("token".into(), serde_json::json!({ "access_token": token }));
            ctx.insert("keyset".into(), serde_json::json!({ "id": 7 }));
            ctx.insert("offset".into(), Value::from(0));
            Value::Object(ctx)
        },
    )
}

#[test]
fn template_rendering() {
    check(
        "template rendering",
        || (template_text(), template_context()),
        |(source, ctx)| {
            match Template::compile(&source) {
                Ok(template) => {
                    for escape in [
                        Escape::None,
                        Escape::Query,
                        Escape::PathSegment,
                        Escape::Header,
                        Escape::Json,
                    ] {
                        match template.render(&ctx, escape) {
                            Ok(out) => {
                                // `{{{x}}}` and `{{&x}}` are unescaped by design.
                                let raw = source.contains("{{{") || source.contains("{{&");
                                if escape == Escape::Header && !raw {
                                    prop_assert!(
                                        !out.contains(['\r', '\n'])
                                            || source.contains(['\r', '\n']),
                                        "a header value gained a line break: {out:?}"
                                    );
                                }
                            }
                            Err(e) => prop_assert!(!e.message.is_empty()),
                        }
                    }
                    if let Err(e) = template.render_value(&ctx) {
                        prop_assert!(!e.message.is_empty());
                    }
                    let _ = (template.variables(), template.helpers());
                }
                Err(e) => prop_assert!(!e.message.is_empty()),
            }
            Ok(())
        },
    );
}

// ------------------------------------------------------------------------------------
// Link header, Retry-After, timestamps
// ------------------------------------------------------------------------------------

fn link_header() -> impl Strategy<Value = (String, Option<String>)> {
    let rel = prop::sample::select(vec!["prev", "first", "last", "self", "previous"]);
    let url = "https://api\\.example/[a-z0-9/?=&;,]{0,16}"
        .prop_filter("no delimiters", |u| !u.contains([';', ',', '<', '>']));
    let other = (url.clone(), rel).prop_map(|(u, r)| format!("<{u}>; rel=\"{r}\""));
    (
        prop::collection::vec(other, 0..4),
        prop::option::of(url),
        any::<prop::sample::Index>(),
        prop::sample::select(vec![
            "rel=\"next\"",
            "rel=next",
            "REL=\"Next\"",
            "rel=\"prev next\"",
        ]),
    )
        .prop_map(|(mut links, next, at, rel_next)| {
            if let Some(next) = &next {
                let index = at.index(links.len() + 1);
                links.insert(index, format!("<{next}>; title=\"a, b; c\"; {rel_next}"));
            }
            (links.join(", "), next)
        })
}

#[test]
fn link_header_parsing() {
    check(
        "link header",
        || {
            prop_oneof![
                3 => link_header().prop_map(|(h, n)| (h, Some(n))),
                1 => "[<>;,=\" a-z:/.]{0,40}".prop_map(|h| (h, None)),
                1 => any::<String>().prop_map(|h| (h, None)),
            ]
        },
        |(header, expected)| {
            let found = link_next(&header);
            if let Some(expected) = expected {
                prop_assert_eq!(found, expected, "{}", header);
            }
            Ok(())
        },
    );
}

#[test]
fn retry_after_parsing() {
    check(
        "retry-after",
        || {
            (
                prop_oneof![
                    2 => text(),
                    2 => any::<f64>().prop_map(|f| f.to_string()),
                    1 => (0u32..100_000).prop_map(|s| s.to_string()),
                    1 => (-100_000i64..100_000).prop_map(|s| {
                        (Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
                            + chrono::Duration::seconds(s))
                        .to_rfc2822()
                    }),
                    1 => any::<String>(),
                ],
                -10_000_000_000i64..10_000_000_000,
            )
        },
        |(text, now)| {
            let now = Utc.timestamp_opt(now, 0).unwrap();
            let wait = parse_retry_after(&text, now);
            if let Ok(seconds) = text.trim().parse::<u32>() {
                prop_assert_eq!(wait, Some(Duration::from_secs(u64::from(seconds))));
            }
            Ok(())
        },
    );
}

fn time_format_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "rfc3339", "rfc2822", "http_date", "unix_seconds", "unix_millis", "date",
            "%Y-%m-%d %H:%M:%S", "%d/%m/%Y", "%s", "%Y%m%dT%H%M%S%z", "%+", "%c", "%e %b %Y",
        ])
        .prop_map(str::to_string),
        2 => "[%a-zA-Z:/ .+-]{0,12}",
        1 => any::<String>().prop_map(|s| s.chars().take(12).collect()),
    ]
}

fn zone() -> impl Strategy<Value = FixedOffset> {
    (-86_399i32..86_400).prop_map(|s| FixedOffset::east_opt(s).unwrap())
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (
        -8_000_000_000_000i64..8_000_000_000_000,
        0u32..1_000_000_000,
    )
        .prop_map(|(s, n)| Utc.timestamp_opt(s, n).unwrap())
}

#[test]
fn timestamp_parsing() {
    check(
        "timestamps",
        || (time_format_text(), json(), text(), zone(), instant()),
        |(format, value, zone_text, zone, at)| {
            let _ = parse_zone(&zone_text);
            let _ = tributary::duration::IsoDuration::parse(&zone_text);
            let Ok(format) = TimeFormat::parse(&format) else {
                return Ok(());
            };
            let _ = format.read(&value, zone);
            let written = format.format(at, zone);
            let read = format.read(&written, zone);
            // Formats that keep the instant to the millisecond read back what they wrote.
            let four_digit_year = (1..=9999).contains(&chrono::Datelike::year(&at));
            if matches!(format, TimeFormat::Rfc3339 | TimeFormat::UnixMillis) && four_digit_year {
                prop_assert_eq!(
                    read.map(|t| t.timestamp_millis()),
                    Some(at.timestamp_millis()),
                    "{:?} wrote {}",
                    format,
                    written
                );
            }
            Ok(())
        },
    );
}

#[test]
fn duration_parsing() {
    check(
        "durations",
        || {
            prop_oneof![
                2 => "P([0-9]{1,22}[YMWD]){0,2}(T([0-9]{1,22}(\\.[0-9]{1,12})?[HMS]){0,3})?",
                1 => text(),
            ]
        },
        |text| {
            if let Ok(duration) = tributary::duration::IsoDuration::parse(&text) {
                let _ = duration.get();
            }
            Ok(())
        },
    );
}

// ------------------------------------------------------------------------------------
// Config loading
// ------------------------------------------------------------------------------------

/// Every valid fixture tree, file by file: (relative path, text).
fn fixture_trees() -> Vec<Vec<(String, String)>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid");
    let mut trees = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for dir in dirs {
        let mut files = Vec::new();
        for sub in ["", "connectors.d", "importers.d"] {
            let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "yaml") {
                    let relative = path.strip_prefix(&dir).unwrap().display().to_string();
                    files.push((relative, std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
        files.sort();
        trees.push(files);
    }
    trees
}

/// One edit of a YAML text, as a person's typo or a merge gone wrong would make it.
#[derive(Debug, Clone)]
enum Edit {
    DeleteLine(prop::sample::Index),
    DuplicateLine(prop::sample::Index),
    ReplaceValue(prop::sample::Index, String),
    Insert(prop::sample::Index, String),
    Truncate(prop::sample::Index),
    Indent(prop::sample::Index, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let scalar = prop_oneof![
        text(),
        prop::sample::select(vec![
            "~",
            "[]",
            "{}",
            "-1",
            "0",
            "99999999999999999999",
            "P100000000D",
            "PT0S",
            "'{{'",
            "\"{{#if}}\"",
            "$..",
            "$[?@.a==]",
            "&a",
            "*a",
            "!!binary x",
            "yes",
            "1e999",
            "{type: oauth2}",
            "[a, [b, [c]]]",
            "\"\\u0000\"",
            "%Y%",
            "|",
            ">-",
        ])
        .prop_map(str::to_string),
    ];
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Edit::DeleteLine),
        any::<prop::sample::Index>().prop_map(Edit::DuplicateLine),
        (any::<prop::sample::Index>(), scalar.clone()).prop_map(|(i, s)| Edit::ReplaceValue(i, s)),
        (
            any::<prop::sample::Index>(),
            prop_oneof![scalar, any::<String>(), "[:{}\\[\\], \n-]{1,6}"]
        )
            .prop_map(|(i, s)| Edit::Insert(i, s)),
        any::<prop::sample::Index>().prop_map(Edit::Truncate),
        (any::<prop::sample::Index>(), 0usize..6).prop_map(|(i, n)| Edit::Indent(i, n)),
    ]
}

fn apply(text: &str, edit: &Edit) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    match edit {
        Edit::DeleteLine(i) => {
            lines.remove(i.index(lines.len()));
        }
        Edit::DuplicateLine(i) => {
            let at = i.index(lines.len());
            lines.insert(at, lines[at].clone());
        }
        Edit::ReplaceValue(i, value) => {
            let at = i.index(lines.len());
            if let Some((key, _)) = lines[at].split_once(':') {
                lines[at] = format!("{key}: {value}");
            } else {
                lines[at] = format!("{}{value}", lines[at]);
            }
        }
        Edit::Insert(i, piece) => {
            let joined = lines.join("\n");
            let mut at = i.index(joined.len() + 1);
            while !joined.is_char_boundary(at) {
                at -= 1;
            }
            return format!("{}{piece}{}", &joined[..at], &joined[at..]);
        }
        Edit::Truncate(i) => {
            let joined = lines.join("\n");
            let mut at = i.index(joined.len() + 1);
            while !joined.is_char_boundary(at) {
                at -= 1;
            }
            return joined[..at].to_string();
        }
        Edit::Indent(i, n) => {
            let at = i.index(lines.len());
            lines[at] = format!("{}{}", " ".repeat(*n), lines[at]);
        }
    }
    lines.join("\n")
}

#[test]
fn config_loading() {
    check(
        "config loading",
        || {
            (
                any::<prop::sample::Index>(),
                any::<prop::sample::Index>(),
                prop::collection::vec(edit(), 1..4),
                prop_oneof![4 => Just(None), 1 => json().prop_map(Some)],
            )
        },
        |(tree, file, edits, replacement)| {
            thread_local! {
                static TREES: Vec<Vec<(String, String)>> = fixture_trees();
                // In memory where there is a tmpfs: the files are rewritten every case.
                static DIR: tempfile::TempDir = tempfile::tempdir_in("/dev/shm")
                    .or_else(|_| tempfile::tempdir())
                    .unwrap();
            }
            let files = TREES.with(|t| t[tree.index(t.len())].clone());
            let target = file.index(files.len());
            DIR.with(|dir| {
                let root = dir.path();
                for sub in ["connectors.d", "importers.d"] {
                    std::fs::create_dir_all(root.join(sub)).unwrap();
                    for entry in std::fs::read_dir(root.join(sub)).unwrap() {
                        std::fs::remove_file(entry.unwrap().path()).unwrap();
                    }
                }
                std::fs::write(root.join("tributary.yaml"), "{}\n").unwrap();
                let mut edited = String::new();
                for (index, (relative, text)) in files.iter().enumerate() {
                    let text = if index == target {
                        edited = match &replacement {
                            // A whole document of another shape (JSON is YAML).
                            Some(value) => value.to_string(),
                            None => edits.iter().fold(text.clone(), |t, e| apply(&t, e)),
                        };
                        edited.clone()
                    } else {
                        text.clone()
                    };
                    std::fs::write(root.join(relative), text).unwrap();
                }
                match tributary::config::load::load_plan(&root.join("tributary.yaml")) {
                    Ok(_) => {}
                    Err(diagnostics) => {
                        prop_assert!(!diagnostics.is_empty(), "an error without a diagnostic");
                        for d in &diagnostics {
                            prop_assert!(!d.to_string().trim().is_empty(), "{edited}");
                        }
                    }
                }
                Ok(())
            })
        },
    );
}
