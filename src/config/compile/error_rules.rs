//! Compiles `error_rules`: each rule names at least one condition, real status codes and
//! header names, a JSONPath that parses, and an action the connector can carry out
//! (`skip_page` needs page numbers or offsets, `refresh_auth` a renewable scheme).

use crate::config::compile::context::{TemplateCx, join};
use crate::config::spec::{AuthSpec, ConnectorSpec, PaginationSpec, StatusCodes};
use crate::plan::{ErrorAction, ErrorRule, Predicate};

/// `error_rules`, in order.
pub(super) fn compile(cx: &mut TemplateCx, spec: &ConnectorSpec) -> Vec<ErrorRule> {
    let mut rules = Vec::new();
    for (index, rule) in spec.error_rules.iter().enumerate() {
        let key = format!("error_rules[{index}]");
        let status = match &rule.status {
            None => Vec::new(),
            Some(StatusCodes::One(code)) => vec![*code],
            Some(StatusCodes::Many(codes)) => codes.clone(),
        };
        if rule.status.is_some() && status.is_empty() {
            cx.file
                .error(&join(&key, "status"), "give at least one status code");
        }
        for code in &status {
            if !(100..=599).contains(code) {
                cx.file.error(
                    &join(&key, "status"),
                    format!("{code} is not an HTTP status code (100 to 599)"),
                );
            }
        }
        if rule.status.is_none()
            && rule.path.is_none()
            && rule.contains.is_none()
            && rule.header.is_none()
        {
            cx.file.error(
                &key,
                "a rule needs at least one condition: status, path, contains or header",
            );
        }
        if rule.equals.is_some() && rule.path.is_none() {
            cx.file.error(
                &join(&key, "equals"),
                "`equals` compares what `path` selects: give a path",
            );
        }
        if rule.contains.as_deref() == Some("") {
            cx.file.error(&join(&key, "contains"), "must not be empty");
        }
        let path = rule.path.as_ref().and_then(|source| {
            cx.path(&join(&key, "path"), source).map(|path| Predicate {
                path,
                equals: rule.equals.clone(),
            })
        });
        let header = rule.header.as_ref().map(|name| {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                cx.file.error(
                    &join(&key, "header"),
                    format!("`{name}` is not an HTTP header name"),
                );
            }
            name.to_ascii_lowercase()
        });
        action(cx, &key, spec, rule.action);
        rules.push(ErrorRule {
            status,
            path,
            contains: rule.contains.clone(),
            header,
            action: rule.action,
            message: rule.message.clone(),
        });
    }
    rules
}

/// Whether the connector can carry out `action`.
fn action(cx: &mut TemplateCx, key: &str, spec: &ConnectorSpec, action: ErrorAction) {
    let key = join(key, "action");
    let renewable = spec
        .auth
        .values()
        .any(|a| matches!(a, AuthSpec::Oauth2(_) | AuthSpec::Session(_)));
    let pagination = &spec.contacts.pagination;
    let problem = match action {
        ErrorAction::SkipPage
            if !matches!(
                pagination,
                PaginationSpec::PageNumber(_) | PaginationSpec::Offset(_)
            ) =>
        {
            "`skip_page` needs `page_number` or `offset` pagination: with a cursor or a next URL there is no page after one that failed"
        }
        ErrorAction::RefreshAuth if !renewable => {
            "`refresh_auth` renews an OAuth token or a session, and this connector has neither scheme"
        }
        ErrorAction::RestartPass if matches!(pagination, PaginationSpec::None(_)) => {
            "`restart_pass` restarts a paginated pass; this connector reads one page"
        }
        _ => return,
    };
    cx.file.error(&key, problem);
}
