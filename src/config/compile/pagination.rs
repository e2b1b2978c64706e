//! Compiles `contacts.pagination`: every paginated style names at least one stop rule that
//! can fire for it, and the request sends the variable the style advances.

use crate::config::compile::context::{TemplateCx, join};
use crate::config::spec::{PageCommon, PaginationSpec};
use strum::VariantNames;

use crate::plan::{self, Pagination, StopRule, defaults};

/// `contacts.pagination`: the style, the variable it advances in the request, its stop
/// rules and loop guards.
pub(super) fn compile(cx: &mut TemplateCx, spec: &PaginationSpec) -> Option<Pagination> {
    let vars = cx.uses.common.clone();
    compile_at(cx, "contacts.pagination", "contacts.request", &vars, spec)
}

/// A pagination at `key` for the request at `request` whose templates use `vars`
/// (`contacts.pagination`, or a deletions request's own).
pub(super) fn compile_at(
    cx: &mut TemplateCx,
    key: &str,
    request: &str,
    vars: &std::collections::BTreeSet<String>,
    spec: &PaginationSpec,
) -> Option<Pagination> {
    let uses = |name: &str| vars.contains(name);
    let needs_var = |cx: &mut TemplateCx, style: &str, var: &str| {
        if !uses(var) && cx.broken_templates == 0 {
            cx.file.error(
                key,
                format!("pagination `{style}` needs `{{{{{var}}}}}` in {request} (query, headers or body)"),
            );
        }
    };
    let style: &'static str = spec.into();
    let has_token = matches!(
        spec,
        PaginationSpec::Cursor(_) | PaginationSpec::NextUrl(_) | PaginationSpec::LinkHeader(_)
    );
    let common = spec
        .common()
        .map(|common| compile_common(cx, key, style, common, has_token));
    let pagination = match spec {
        PaginationSpec::None(_) => Pagination::None,
        PaginationSpec::PageNumber(s) => {
            needs_var(cx, style, "page");
            Pagination::PageNumber {
                start: s.start.unwrap_or(defaults::FIRST_PAGE),
                common: common??,
            }
        }
        PaginationSpec::Offset(s) => {
            needs_var(cx, style, "offset");
            Pagination::Offset {
                start: s.start.unwrap_or(defaults::FIRST_OFFSET),
                common: common??,
            }
        }
        PaginationSpec::Cursor(s) => {
            needs_var(cx, style, "cursor");
            let cursor = cx.path(&join(key, "cursor"), &s.cursor);
            Pagination::Cursor {
                common: common??,
                cursor: cursor?,
            }
        }
        PaginationSpec::NextUrl(s) => {
            let next_url = cx.path(&join(key, "next_url"), &s.next_url);
            Pagination::NextUrl {
                common: common??,
                next_url: next_url?,
                verbatim: s.verbatim.unwrap_or(defaults::NEXT_URL_VERBATIM),
            }
        }
        PaginationSpec::LinkHeader(_) => Pagination::LinkHeader { common: common?? },
        PaginationSpec::Keyset(_) => {
            if !uses("keyset.updated") && !uses("keyset.id") && cx.broken_templates == 0 {
                cx.file.error(
                    key,
                    format!("pagination `keyset` needs `{{{{keyset.updated}}}}` or `{{{{keyset.id}}}}` in {request}"),
                );
            }
            Pagination::Keyset { common: common?? }
        }
    };
    Some(pagination)
}

/// Stop rules and loop guards, shared by every paginated style.
fn compile_common(
    cx: &mut TemplateCx,
    key: &str,
    style: &str,
    spec: PageCommon<'_>,
    has_token: bool,
) -> Option<plan::PageCommon> {
    if spec.stop.is_empty() {
        cx.file.error(
            &join(key, "stop"),
            format!(
                "pagination `{style}` needs at least one stop rule ({})",
                <StopRule as VariantNames>::VARIANTS.join(", ")
            ),
        );
    }
    for (index, rule) in spec.stop.iter().enumerate() {
        let at = format!("{key}.stop[{index}]");
        match rule {
            StopRule::HasMoreFalse if spec.has_more.is_none() => cx.file.error(
                &at,
                "`has_more_false` needs `has_more` (a JSONPath to the flag)",
            ),
            StopRule::TotalReached if spec.total.is_none() && spec.total_pages.is_none() => cx
                .file
                .error(
                    &at,
                    "`total_reached` needs `total` or `total_pages` (a JSONPath)",
                ),
            StopRule::MissingToken if !has_token => cx.file.error(
                &at,
                format!("`missing_token`: pagination `{style}` has no token; use empty_page, short_page, has_more_false or total_reached"),
            ),
            _ => {}
        }
        if spec.stop[..index].contains(rule) {
            cx.file.error(&at, "this stop rule is listed twice");
        }
    }
    let has_more = spec
        .has_more
        .as_ref()
        .and_then(|p| cx.path(&join(key, "has_more"), p));
    let total = spec
        .total
        .as_ref()
        .and_then(|p| cx.path(&join(key, "total"), p));
    let total_pages = spec
        .total_pages
        .as_ref()
        .and_then(|p| cx.path(&join(key, "total_pages"), p));
    let max_pages = spec.max_pages.unwrap_or(defaults::MAX_PAGES);
    if max_pages == 0 {
        cx.file.error(&join(key, "max_pages"), "must be at least 1");
    }
    Some(plan::PageCommon {
        stop: spec.stop.to_vec(),
        has_more,
        total,
        total_pages,
        max_pages,
    })
}
