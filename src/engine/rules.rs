//! Which of a connector's `error_rules` recognises a response: the first whose conditions
//! all hold. A rule without status codes looks at errors (400 and up) only, and a body is
//! parsed as JSON only for a rule whose cheaper conditions (status, header, text) already
//! hold, so a connector's rules cost nothing on the ordinary successful page.
//!
//! Never decides what an action does: `client.rs` retries, waits or renews, `run.rs`
//! restarts a pass or skips a page.

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::plan::ErrorRule;

/// The first rule of `rules` matching a response, if any.
pub fn matching<'r>(
    rules: &'r [ErrorRule],
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<&'r ErrorRule> {
    let mut parsed: Option<Option<Value>> = None;
    rules.iter().find(|rule| {
        let status_holds = if rule.status.is_empty() {
            status >= 400
        } else {
            rule.status.contains(&status)
        };
        if !status_holds {
            return false;
        }
        if let Some(header) = &rule.header
            && !headers.contains_key(header.as_str())
        {
            return false;
        }
        if let Some(text) = &rule.contains
            && !contains(body, text.as_bytes())
        {
            return false;
        }
        match &rule.path {
            None => true,
            Some(predicate) => parsed
                .get_or_insert_with(|| serde_json::from_slice(body).ok())
                .as_ref()
                .is_some_and(|value| predicate.matches(value)),
        }
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonpath::JsonPath;
    use crate::plan::{ErrorAction, Predicate};

    fn rule(status: &[u16], path: Option<(&str, Value)>, action: ErrorAction) -> ErrorRule {
        ErrorRule {
            status: status.to_vec(),
            path: path.map(|(p, v)| Predicate {
                path: JsonPath::parse(p).unwrap(),
                equals: Some(v),
            }),
            contains: None,
            header: None,
            action,
            message: None,
        }
    }

    #[test]
    fn the_first_rule_whose_conditions_hold_wins() {
        let rules = [
            rule(
                &[403],
                Some(("$[*].errorCode", "REQUEST_LIMIT_EXCEEDED".into())),
                ErrorAction::RateLimited,
            ),
            rule(&[403], None, ErrorAction::FailConfig),
            rule(
                &[200],
                Some(("$.errors[*].extensions.code", "THROTTLED".into())),
                ErrorAction::RateLimited,
            ),
            rule(&[], None, ErrorAction::FailTransient),
        ];
        let headers = HeaderMap::new();
        let action = |status, body: &str| {
            matching(&rules, status, &headers, body.as_bytes()).map(|r| r.action)
        };
        assert_eq!(
            action(403, r#"[{"errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#),
            Some(ErrorAction::RateLimited)
        );
        assert_eq!(
            action(403, r#"[{"errorCode":"INSUFFICIENT_ACCESS"}]"#),
            Some(ErrorAction::FailConfig)
        );
        assert_eq!(
            action(200, r#"{"errors":[{"extensions":{"code":"THROTTLED"}}]}"#),
            Some(ErrorAction::RateLimited)
        );
        assert_eq!(
            action(200, r#"{"data":[]}"#),
            None,
            "a success needs its status named"
        );
        assert_eq!(action(404, "not json"), Some(ErrorAction::FailTransient));
    }
}
