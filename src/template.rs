//! Handlebars templates of connector specs: one registry, strict mode, our helpers, and
//! escaping chosen by where the output goes.
//!
//! Templates are compiled when the configuration loads ([`Template::compile`]); the
//! validator walks their syntax tree ([`Template::variables`]) because handlebars' strict
//! mode alone misses `{{#if unknown}}`. Rendering never guesses types: a value that is
//! exactly one `{{expr}}` keeps the JSON type of its value ([`Template::render_value`]),
//! anything else is text. Escaping is per location ([`Escape`]), never HTML.
//!
//! Helpers are pure: none reads the environment, files or the network, so a template can
//! only see what the engine puts in its context.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, LazyLock};

use base64::Engine as _;
use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use handlebars::template::{Parameter, TemplateElement};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, Path, PathSeg, RenderContext, RenderError,
    RenderErrorReason, Renderable, ScopedJson, StringOutput,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};

use crate::timeformat::{TimeFormat, parse_zone};

/// Where a rendered template goes; decides how each `{{expr}}`'s output is escaped.
/// Literal text of the template is never changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As is (base URLs, form fields and query values that the URL builder encodes
    /// whole, JSON body leaves which serde_json escapes).
    None,
    /// A query parameter value. Output is kept as is because the engine encodes the whole
    /// value once when it builds the URL; encoding here too would encode twice. Carriage
    /// returns and line feeds are removed.
    Query,
    /// Inside a URL path: each expression's output is percent-encoded (`/` included), so
    /// a value can never add a path segment.
    PathSegment,
    /// A header value: carriage returns and line feeds become spaces, so a value can never
    /// add a header.
    Header,
    /// Inside a JSON string of a whole-body template: the output is escaped as JSON string
    /// content (quotes, backslashes, control characters).
    Json,
}

/// RFC 3986 unreserved characters stay; everything else in a path segment is encoded.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Form/query component encoding, for the `urlencode` helper.
const COMPONENT: &AsciiSet = PATH_SEGMENT;

thread_local! {
    /// The escape of the render running on this thread. Rendering is synchronous, so one
    /// registry serves every location: the escape function reads this cell.
    static CURRENT_ESCAPE: Cell<Escape> = const { Cell::new(Escape::None) };
}

fn escape_output(text: &str) -> String {
    match CURRENT_ESCAPE.with(Cell::get) {
        Escape::None => text.to_string(),
        Escape::Query => text.replace(['\r', '\n'], ""),
        Escape::PathSegment => utf8_percent_encode(text, PATH_SEGMENT).to_string(),
        Escape::Header => text.replace(['\r', '\n'], " "),
        Escape::Json => {
            let quoted = Value::String(text.to_string()).to_string();
            quoted[1..quoted.len() - 1].to_string()
        }
    }
}

/// Helpers a template may call: handlebars' built-ins that only read the context, and
/// ours. `log` and partials are left out.
pub const HELPERS: &[&str] = &[
    "if",
    "unless",
    "each",
    "with",
    "lookup",
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "and",
    "or",
    "not",
    "len",
    "format_time",
    "urlencode",
    "base64",
    "default",
    "json",
    "join",
];

/// Helpers whose block body sees another context than the root (`this` changes).
const SCOPING_HELPERS: &[&str] = &["each", "with"];

static REGISTRY: LazyLock<Handlebars<'static>> = LazyLock::new(|| {
    let mut registry = Handlebars::new();
    registry.set_strict_mode(true);
    registry.register_escape_fn(escape_output);
    registry.unregister_helper("log");
    registry.unregister_helper("raw");
    let ours: [(&str, HelperFn); 6] = [
        ("format_time", format_time),
        ("urlencode", urlencode),
        ("base64", base64_helper),
        ("default", default_helper),
        ("json", json_helper),
        ("join", join),
    ];
    for (name, function) in ours {
        registry.register_helper(name, Box::new(FnHelper(function)));
    }
    registry
});

/// A template that failed to compile or render. `line` and `column` are inside the
/// template text (1-based), when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// Line inside the template.
    pub line: Option<usize>,
    /// Column inside the template.
    pub column: Option<usize>,
    /// What went wrong, lowercase.
    pub message: String,
}

impl TemplateError {
    fn new(message: impl Into<String>) -> Self {
        TemplateError {
            line: None,
            column: None,
            message: message.into(),
        }
    }

    fn from_render(error: &RenderError) -> Self {
        let message = match error.reason() {
            RenderErrorReason::MissingVariable(Some(path)) => {
                format!("variable `{}` is not set", dotted(path))
            }
            RenderErrorReason::MissingVariable(None) => "a variable is not set".to_string(),
            RenderErrorReason::HelperNotFound(name) => format!("unknown helper `{name}`"),
            other => lowercase_first(&other.to_string()),
        };
        TemplateError {
            line: error.line_no,
            column: error.column_no,
            message,
        }
    }
}

/// The deepest nesting of blocks (`{{#if}}` inside `{{#if}}`) and of subexpressions
/// (`(a (b (c)))`) a template may have. Requests need two or three; the template parser
/// recurses once per level (thousands overflow its stack) and slows down with depth.
pub const MAX_NESTING: usize = 32;

/// Refuses nesting deeper than [`MAX_NESTING`] before the recursive parser sees the text.
/// A flat scan: `{{#`/`{{^` open a block and `{{/` closes one, parentheses inside a
/// mustache open and close subexpressions; comments, raw blocks and quoted strings are
/// skipped. Malformed text passes through, for the parser to describe.
fn check_nesting(source: &str) -> Result<(), TemplateError> {
    let bytes = source.as_bytes();
    let too_deep = |at: usize| {
        let before = &source[..at];
        TemplateError {
            line: Some(before.matches('\n').count() + 1),
            column: Some(before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1),
            message: format!(
                "blocks or subexpressions nest deeper than {MAX_NESTING} levels; no request \
                 needs that many"
            ),
        }
    };
    let (mut blocks, mut at) = (0usize, 0usize);
    while let Some(open) = source[at..].find("{{").map(|i| i + at) {
        let mut inner = open + 2;
        while bytes.get(inner) == Some(&b'{') {
            inner += 1;
        }
        if bytes.get(inner) == Some(&b'~') {
            inner += 1;
        }
        if source[inner..].starts_with("!--") {
            at = source[inner..]
                .find("--}}")
                .map_or(bytes.len(), |i| inner + i + 4);
            continue;
        }
        if source[inner..].starts_with('!') {
            at = source[inner..]
                .find("}}")
                .map_or(bytes.len(), |i| inner + i + 2);
            continue;
        }
        match bytes.get(inner) {
            Some(b'#' | b'^') => {
                blocks += 1;
                if blocks > MAX_NESTING {
                    return Err(too_deep(open));
                }
            }
            Some(b'/') => blocks = blocks.saturating_sub(1),
            _ => {}
        }
        // Subexpressions inside this mustache.
        let (mut depth, mut quote, mut i) = (0usize, None, inner);
        while i < bytes.len() {
            let c = bytes[i];
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == b'"' || c == b'\'' => quote = Some(c),
                None if c == b'(' => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Err(too_deep(i));
                    }
                }
                None if c == b')' => depth = depth.saturating_sub(1),
                None if bytes[i..].starts_with(b"}}") => break,
                None => {}
            }
            i += 1;
        }
        at = i.max(open + 2);
    }
    Ok(())
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => {
                write!(
                    f,
                    "{} (template line {line}, column {column})",
                    self.message
                )
            }
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for TemplateError {}

fn lowercase_first(text: &str) -> String {
    let text = text.trim().trim_end_matches('.');
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn dotted(path: &str) -> String {
    path.replace('/', ".")
}

/// A compiled template. Cheap to clone (the parsed form is shared).
#[derive(Clone)]
pub struct Template {
    source: String,
    parsed: Arc<handlebars::Template>,
    /// For a template that is exactly one `{{expr}}`: the same expression passed to the
    /// `json` helper, so that rendering it yields the value's JSON text.
    value_form: Option<Arc<handlebars::Template>>,
    variables: Vec<String>,
    helpers: Vec<String>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Template {
    /// Parses `source` and checks that every helper it calls exists.
    ///
    /// # Errors
    /// Syntax errors (with line and column inside the template), unknown helpers,
    /// partials and decorators (not part of the language).
    pub fn compile(source: &str) -> Result<Template, TemplateError> {
        check_nesting(source)?;
        let parsed = handlebars::Template::compile(source).map_err(|error| {
            let (line, column) = error.pos().unzip();
            let reason = error.reason().to_string();
            // The parser's own text lists every grammar rule it expected; say less.
            let message = if reason.starts_with("invalid handlebars syntax") {
                "invalid template syntax (an unclosed `{{`, block or string?)".to_string()
            } else {
                format!("invalid template: {}", lowercase_first(&reason))
            };
            TemplateError {
                line,
                column,
                message,
            }
        })?;
        let mut walk = Walk::default();
        for (index, element) in parsed.elements.iter().enumerate() {
            let position = parsed.mapping.get(index).map(|m| (m.0, m.1));
            walk.element(element, false)
                .map_err(|message| TemplateError {
                    line: position.map(|p| p.0),
                    column: position.map(|p| p.1),
                    message,
                })?;
        }
        let value_form = single_expression(source, &parsed)
            .map(|inner| {
                let text = format!("{{{{{{json ({inner})}}}}}}");
                let direct = format!("{{{{{{json {inner}}}}}}}");
                let compiled = if is_plain_path(&parsed) {
                    handlebars::Template::compile(&direct)
                } else {
                    handlebars::Template::compile(&text)
                };
                compiled.map(Arc::new)
            })
            .transpose()
            .map_err(|error| TemplateError::new(lowercase_first(&error.to_string())))?;
        Ok(Template {
            source: source.to_string(),
            parsed: Arc::new(parsed),
            value_form,
            variables: walk.variables.into_iter().collect(),
            helpers: walk.helpers.into_iter().collect(),
        })
    }

    /// Every context path the template reads, dotted (`credentials.api_key`,
    /// `filters.owner_id`), including those in `#if`/`#unless` conditions, `#each` and
    /// `#with` arguments and helper arguments. Paths inside `#each`/`#with` bodies that
    /// are relative to the iterated item are not listed; `@root.x` ones are.
    pub fn variables(&self) -> Vec<String> {
        self.variables.clone()
    }

    /// Names of the helpers the template calls (all known: `compile` refuses others).
    pub fn helpers(&self) -> Vec<String> {
        self.helpers.clone()
    }

    /// Renders to text, escaping each expression's output for `escape`. A null value
    /// renders as an empty string.
    ///
    /// # Errors
    /// A variable missing from `ctx` (strict mode) or a helper given bad arguments.
    pub fn render(&self, ctx: &Value, escape: Escape) -> Result<String, TemplateError> {
        render_parsed(&self.parsed, ctx, escape)
    }

    /// Renders a value whose JSON type matters (JSON body leaves): when the template is
    /// exactly one `{{expr}}`, the expression's value keeps its type (number, bool, null,
    /// array, object); anything else renders as a string.
    ///
    /// # Errors
    /// As [`Template::render`].
    pub fn render_value(&self, ctx: &Value) -> Result<Value, TemplateError> {
        match &self.value_form {
            Some(form) => {
                let text = render_parsed(form, ctx, Escape::None)?;
                serde_json::from_str(&text)
                    .map_err(|error| TemplateError::new(format!("internal: {error}")))
            }
            None => self.render(ctx, Escape::None).map(Value::String),
        }
    }

    /// Whether the template has any `{{...}}` at all (else it is literal text).
    pub fn has_expressions(&self) -> bool {
        self.parsed.elements.iter().any(|e| {
            !matches!(
                e,
                TemplateElement::RawString(_) | TemplateElement::Comment(_)
            )
        })
    }

    /// Whether the template is exactly one `{{expr}}` (its value keeps its type).
    pub fn is_single_expression(&self) -> bool {
        self.value_form.is_some()
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

fn render_parsed(
    parsed: &handlebars::Template,
    ctx: &Value,
    escape: Escape,
) -> Result<String, TemplateError> {
    let context = Context::wraps(ctx).map_err(|e| TemplateError::from_render(&e))?;
    let mut render_context = RenderContext::new(None);
    let mut out = StringOutput::new();
    let previous = CURRENT_ESCAPE.with(|cell| cell.replace(escape));
    let result = parsed.render(&REGISTRY, &context, &mut render_context, &mut out);
    CURRENT_ESCAPE.with(|cell| cell.set(previous));
    result.map_err(|e| TemplateError::from_render(&e))?;
    out.into_string()
        .map_err(|e| TemplateError::new(format!("template output is not UTF-8: {e}")))
}

/// The inner text of a template that is exactly one `{{expr}}` (surrounding whitespace
/// allowed), or `None`.
fn single_expression<'a>(source: &'a str, parsed: &handlebars::Template) -> Option<&'a str> {
    let [element] = parsed.elements.as_slice() else {
        return None;
    };
    if !matches!(element, TemplateElement::Expression(_)) {
        return None;
    }
    let trimmed = source.trim();
    let inner = trimmed.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.starts_with('{') || inner.contains("{{") || inner.contains("}}") {
        return None;
    }
    Some(
        inner
            .trim()
            .trim_start_matches('~')
            .trim_end_matches('~')
            .trim(),
    )
}

fn is_plain_path(parsed: &handlebars::Template) -> bool {
    match parsed.elements.first() {
        Some(TemplateElement::Expression(ht)) => {
            ht.params.is_empty()
                && ht.hash.is_empty()
                && matches!(ht.name, Parameter::Path(_))
                && !ht.name.as_name().is_some_and(|n| HELPERS.contains(&n))
        }
        _ => false,
    }
}

/// Collects variable paths and helper names from a parsed template.
#[derive(Default)]
struct Walk {
    variables: BTreeSet<String>,
    helpers: BTreeSet<String>,
}

impl Walk {
    /// `scoped`: inside the body of `#each`/`#with`, where plain paths are relative to
    /// the current item rather than the root context.
    fn element(&mut self, element: &TemplateElement, scoped: bool) -> Result<(), String> {
        match element {
            TemplateElement::RawString(_) | TemplateElement::Comment(_) => Ok(()),
            TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht) => {
                self.helper_template(ht, scoped)
            }
            TemplateElement::HelperBlock(ht) => self.helper_template(ht, scoped),
            TemplateElement::PartialExpression(_) | TemplateElement::PartialBlock(_) => {
                Err("partials (`{{> name}}`) are not part of the template language".into())
            }
            TemplateElement::DecoratorExpression(_) | TemplateElement::DecoratorBlock(_) => {
                Err("decorators (`{{* name}}`) are not part of the template language".into())
            }
            #[allow(unreachable_patterns)]
            _ => Err("unsupported template element".into()),
        }
    }

    fn helper_template(
        &mut self,
        ht: &handlebars::template::HelperTemplate,
        scoped: bool,
    ) -> Result<(), String> {
        let is_call = ht.block || !ht.params.is_empty() || !ht.hash.is_empty();
        let name = match &ht.name {
            Parameter::Name(name) => Some(name.clone()),
            Parameter::Path(path) => {
                if is_call {
                    Some(raw_path(path))
                } else {
                    let raw = raw_path(path);
                    if HELPERS.contains(&raw.as_str()) {
                        Some(raw)
                    } else {
                        self.path(path, scoped);
                        None
                    }
                }
            }
            Parameter::Subexpression(sub) => {
                self.element(sub.as_element(), scoped)?;
                None
            }
            Parameter::Literal(_) => None,
            #[allow(unreachable_patterns)]
            _ => None,
        };
        if let Some(name) = &name {
            if !HELPERS.contains(&name.as_str()) {
                return Err(format!(
                    "unknown helper `{name}` (known: {})",
                    HELPERS.join(", ")
                ));
            }
            self.helpers.insert(name.clone());
        }
        for param in ht.params.iter().chain(ht.hash.values()) {
            self.parameter(param, scoped)?;
        }
        let body_scoped = scoped
            || name
                .as_deref()
                .is_some_and(|n| SCOPING_HELPERS.contains(&n));
        if let Some(template) = &ht.template {
            for element in &template.elements {
                self.element(element, body_scoped)?;
            }
        }
        if let Some(inverse) = &ht.inverse {
            for element in &inverse.elements {
                self.element(element, scoped)?;
            }
        }
        Ok(())
    }

    fn parameter(&mut self, param: &Parameter, scoped: bool) -> Result<(), String> {
        match param {
            Parameter::Path(path) => {
                self.path(path, scoped);
                Ok(())
            }
            Parameter::Subexpression(sub) => self.element(sub.as_element(), scoped),
            _ => Ok(()),
        }
    }

    fn path(&mut self, path: &Path, scoped: bool) {
        let Path::Relative((segs, raw)) = path else {
            // `@index`, `@key`, `@first`: block-local data, not context.
            return;
        };
        let names: Vec<&str> = segs
            .iter()
            .filter_map(|seg| match seg {
                PathSeg::Named(name) => Some(name.as_str()),
                _ => None,
            })
            .collect();
        let has_rule = segs.iter().any(|s| !matches!(s, PathSeg::Named(_)));
        let rooted = raw.starts_with("@root");
        if names.is_empty() || raw.starts_with("this") || raw.starts_with("./") {
            return;
        }
        if scoped && !rooted {
            return;
        }
        if has_rule && !rooted {
            // `../x` outside a scoping block still means the root; inside one we cannot
            // know statically where it points, so it is left to strict mode at run time.
            if scoped {
                return;
            }
        }
        self.variables.insert(names.join("."));
    }
}

fn raw_path(path: &Path) -> String {
    match path {
        Path::Relative((_, raw)) => raw.clone(),
        Path::Local((_, _, raw)) => raw.clone(),
    }
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A helper as a plain function of its arguments: every helper of ours computes a value
/// (usable in subexpressions too) and never writes output itself.
struct FnHelper(HelperFn);

/// The shape of our helpers: arguments in, a JSON value out.
type HelperFn = fn(&Helper<'_>) -> Result<Value, RenderError>;

impl HelperDef for FnHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        (self.0)(h).map(ScopedJson::Derived)
    }
}

fn param<'a>(
    h: &'a Helper<'_>,
    index: usize,
    helper: &'static str,
) -> Result<&'a Value, RenderError> {
    let p = h
        .param(index)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex(helper, index))?;
    if p.is_value_missing() {
        return Err(RenderError::strict_error(p.relative_path()));
    }
    Ok(p.value())
}

fn text_of(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn helper_error(message: String) -> RenderError {
    RenderErrorReason::Other(message).into()
}

/// `{{format_time value "format" ["zone"]}}`: re-writes a timestamp (an RFC 3339 string,
/// or unix seconds/milliseconds as a number) in another format; null stays null so that
/// the entry is omitted.
fn format_time(h: &Helper<'_>) -> Result<Value, RenderError> {
    let value = param(h, 0, "format_time")?;
    let format = param(h, 1, "format_time")?;
    let format = format
        .as_str()
        .ok_or_else(|| helper_error("format_time: the format must be a string".into()))?;
    let format =
        TimeFormat::parse(format).map_err(|e| helper_error(format!("format_time: {e}")))?;
    let zone = match h.param(2) {
        Some(zone) => parse_zone(&text_of(zone.value()))
            .map_err(|e| helper_error(format!("format_time: {e}")))?,
        None => FixedOffset::east_opt(0).expect("zero offset is valid"),
    };
    let instant = match value {
        Value::Null => return Ok(Value::Null),
        Value::String(s) if s.is_empty() => return Ok(Value::Null),
        Value::Number(n) => {
            let n = n.as_f64().unwrap_or(0.0);
            // Values above 1e11 are milliseconds: 1e11 seconds is the year 5138.
            let millis = if n.abs() >= 1e11 { n } else { n * 1000.0 };
            Utc.timestamp_millis_opt(millis.round() as i64).single()
        }
        Value::String(s) => TimeFormat::Rfc3339.read(&Value::String(s.clone()), zone),
        _ => None,
    }
    .ok_or_else(|| {
        helper_error(format!(
            "format_time: `{}` is not a timestamp",
            text_of(value)
        ))
    })?;
    Ok(format.format(instant, zone))
}

/// `{{urlencode value}}`: percent-encodes a value (for a query-language string that
/// embeds a URL component, for example).
fn urlencode(h: &Helper<'_>) -> Result<Value, RenderError> {
    let value = param(h, 0, "urlencode")?;
    if value.is_null() {
        return Ok(Value::Null);
    }
    Ok(Value::String(
        utf8_percent_encode(&text_of(value), COMPONENT).to_string(),
    ))
}

/// `{{base64 a [b ...]}}`: standard base64 of the arguments joined by `:` (so
/// `{{base64 credentials.user credentials.key}}` builds a basic-auth value).
fn base64_helper(h: &Helper<'_>) -> Result<Value, RenderError> {
    param(h, 0, "base64")?;
    let mut parts = Vec::new();
    for index in 0..h.params().len() {
        parts.push(text_of(param(h, index, "base64")?));
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(parts.join(":"));
    Ok(Value::String(encoded))
}

/// `{{default value fallback}}`: the value unless it is null or an empty string.
fn default_helper(h: &Helper<'_>) -> Result<Value, RenderError> {
    let value = param(h, 0, "default")?;
    let fallback = param(h, 1, "default")?;
    let empty = value.is_null() || value.as_str().is_some_and(str::is_empty);
    Ok(if empty {
        fallback.clone()
    } else {
        value.clone()
    })
}

/// `{{json value}}`: the value's JSON text (for a whole-body template, or a list filter
/// sent as a JSON array).
fn json_helper(h: &Helper<'_>) -> Result<Value, RenderError> {
    let value = param(h, 0, "json")?;
    Ok(Value::String(value.to_string()))
}

/// `{{join list ","}}`: a list's items joined by a separator; null stays null.
fn join(h: &Helper<'_>) -> Result<Value, RenderError> {
    let value = param(h, 0, "join")?;
    let separator = text_of(param(h, 1, "join")?);
    Ok(match value {
        Value::Null => Value::Null,
        Value::Array(items) => Value::String(
            items
                .iter()
                .map(text_of)
                .collect::<Vec<_>>()
                .join(&separator),
        ),
        other => Value::String(text_of(other)),
    })
}

// ---------------------------------------------------------------------------------------
// JSON body templates
// ---------------------------------------------------------------------------------------

/// A JSON document whose string leaves are templates (a `json:` request body). Rendering
/// omits entries whose value renders null or empty, objects or arrays left empty, and
/// nested objects whose every templated entry was omitted, so that optional filters and
/// first runs need no special cases. The top-level document always stays.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonTemplate {
    /// A literal that is not a string: kept as is.
    Literal(Value),
    /// A string leaf.
    Text(Template),
    /// An array.
    Array(Vec<JsonTemplate>),
    /// An object, keys in written order.
    Object(Vec<(String, JsonTemplate)>),
}

impl JsonTemplate {
    /// Compiles every string leaf.
    ///
    /// # Errors
    /// The first template error, with the JSON key path (`filter.value`) of its leaf.
    pub fn compile(value: &Value) -> Result<JsonTemplate, (String, TemplateError)> {
        Self::compile_at(value, "")
    }

    fn compile_at(value: &Value, at: &str) -> Result<JsonTemplate, (String, TemplateError)> {
        Ok(match value {
            Value::String(text) => {
                JsonTemplate::Text(Template::compile(text).map_err(|e| (at.to_string(), e))?)
            }
            Value::Array(items) => JsonTemplate::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| Self::compile_at(item, &join_key(at, &i.to_string())))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => JsonTemplate::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), Self::compile_at(v, &join_key(at, k))?)))
                    .collect::<Result<_, _>>()?,
            ),
            other => JsonTemplate::Literal(other.clone()),
        })
    }

    /// Whether any leaf below is a template.
    pub fn has_template(&self) -> bool {
        match self {
            JsonTemplate::Literal(_) => false,
            JsonTemplate::Text(t) => t.has_expressions(),
            JsonTemplate::Array(items) => items.iter().any(JsonTemplate::has_template),
            JsonTemplate::Object(entries) => entries.iter().any(|(_, v)| v.has_template()),
        }
    }

    /// Every template leaf with its JSON key path.
    pub fn templates(&self) -> Vec<(String, &Template)> {
        let mut out = Vec::new();
        self.collect("", &mut out);
        out
    }

    fn collect<'a>(&'a self, at: &str, out: &mut Vec<(String, &'a Template)>) {
        match self {
            JsonTemplate::Literal(_) => {}
            JsonTemplate::Text(t) => out.push((at.to_string(), t)),
            JsonTemplate::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    item.collect(&join_key(at, &i.to_string()), out);
                }
            }
            JsonTemplate::Object(entries) => {
                for (k, v) in entries {
                    v.collect(&join_key(at, k), out);
                }
            }
        }
    }

    /// Renders the document. The top level renders to `{}`/`[]` rather than disappearing.
    ///
    /// # Errors
    /// The first leaf that fails to render.
    pub fn render(&self, ctx: &Value) -> Result<Value, TemplateError> {
        if let JsonTemplate::Object(entries) = self {
            // The top level keeps its literal entries even when every template is empty.
            let mut out = Map::new();
            for (k, v) in entries {
                if let Some(v) = v.render_inner(ctx)? {
                    out.insert(k.clone(), v);
                }
            }
            return Ok(Value::Object(out));
        }
        Ok(self.render_inner(ctx)?.unwrap_or_else(|| match self {
            JsonTemplate::Array(_) => Value::Array(Vec::new()),
            JsonTemplate::Object(_) => Value::Object(Map::new()),
            _ => Value::Null,
        }))
    }

    fn render_inner(&self, ctx: &Value) -> Result<Option<Value>, TemplateError> {
        let value = match self {
            JsonTemplate::Literal(value) => value.clone(),
            JsonTemplate::Text(template) => template.render_value(ctx)?,
            JsonTemplate::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    if let Some(v) = item.render_inner(ctx)? {
                        out.push(v);
                    }
                }
                Value::Array(out)
            }
            JsonTemplate::Object(entries) => {
                let mut out = Map::new();
                let mut templated = 0;
                let mut templated_kept = 0;
                for (k, v) in entries {
                    let has_template = v.has_template();
                    templated += usize::from(has_template);
                    if let Some(v) = v.render_inner(ctx)? {
                        templated_kept += usize::from(has_template);
                        out.insert(k.clone(), v);
                    }
                }
                // A nested object whose every templated entry was omitted goes too: its
                // literal entries only qualified those values (`{propertyName: x,
                // operator: GTE, value: "{{since}}"}` on a first run).
                if templated > 0 && templated_kept == 0 {
                    return Ok(None);
                }
                Value::Object(out)
            }
        };
        Ok((!is_empty_value(&value)).then_some(value))
    }
}

/// Null, `""`, `[]` and `{}` are "empty": the entry holding them is omitted.
pub fn is_empty_value(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn join_key(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

/// Formats an instant for the `now`, `since` and `keyset.updated` context entries the
/// engine builds, so that every caller writes the same text.
pub fn context_time(instant: DateTime<Utc>) -> Value {
    TimeFormat::Rfc3339.format(
        instant,
        FixedOffset::east_opt(0).expect("zero offset is valid"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #11, finding 2: 5,000 nested subexpressions overflowed the parser's stack;
    /// finding 6: 30,000 nested `{{#if}}` blocks took 85 s. Both are refused at once.
    #[test]
    fn deep_nesting_is_refused_before_the_parser_recurses() {
        // Multi-byte text inside and after a mustache is scanned byte by byte safely.
        assert!(Template::compile("{{#if (eq a \"é(\")}}é{{/if}}é(").is_ok());
        let subexpressions = format!(
            "{{{{json {}x{}}}}}",
            "(json ".repeat(5_000),
            ")".repeat(5_000)
        );
        let error = Template::compile(&subexpressions).unwrap_err();
        assert!(
            error.message.contains("nest deeper than 32 levels"),
            "{error}"
        );
        assert_eq!((error.line, error.column), (Some(1), Some(8 + 6 * 32)));

        let blocks = format!(
            "{}x{}",
            "{{#if a}}\n".repeat(30_000),
            "{{/if}}".repeat(30_000)
        );
        let error = Template::compile(&blocks).unwrap_err();
        assert!(
            error.message.contains("nest deeper than 32 levels"),
            "{error}"
        );
        assert_eq!(error.line, Some(33));

        let fine = format!("{}x{}", "{{#if a}}".repeat(32), "{{/if}}".repeat(32));
        assert!(Template::compile(&fine).is_ok());
        let siblings = "{{#if a}}x{{/if}}".repeat(1_000);
        assert!(Template::compile(&siblings).is_ok());
        let quoted = "{{#if (eq a \"((((\")}}x{{/if}}{{!-- {{#if}}{{#if}} --}}";
        assert!(Template::compile(quoted).is_ok());
    }
    use serde_json::json;

    fn ctx() -> Value {
        json!({
            "credentials": {"api_key": "k&y", "user": "ada", "password": "secret"},
            "settings": {"store_hash": "ab/c", "region": "eu"},
            "filters": {"owner_id": 11, "labels": ["a", "b"], "empty": null},
            "since": null,
            "page": 2,
            "now": "2024-05-01T10:00:00Z"
        })
    }

    #[test]
    fn escaping_follows_the_location_never_html() {
        let t = Template::compile("x={{credentials.api_key}}").unwrap();
        assert_eq!(t.render(&ctx(), Escape::Query).unwrap(), "x=k&y");
        let t = Template::compile("/stores/{{settings.store_hash}}/v3").unwrap();
        assert_eq!(
            t.render(&ctx(), Escape::PathSegment).unwrap(),
            "/stores/ab%2Fc/v3"
        );
        let t = Template::compile("{\"q\": \"{{credentials.api_key}}\\\"\"}").unwrap();
        assert_eq!(
            t.render(&json!({"credentials": {"api_key": "a\"b"}}), Escape::Json)
                .unwrap(),
            "{\"q\": \"a\\\"b\\\"\"}"
        );
        let t = Template::compile("{{credentials.api_key}}").unwrap();
        assert_eq!(
            t.render(
                &json!({"credentials": {"api_key": "a\r\nX-Evil: 1"}}),
                Escape::Header
            )
            .unwrap(),
            "a  X-Evil: 1"
        );
    }

    #[test]
    fn single_expression_keeps_its_json_type() {
        let t = Template::compile("{{filters.owner_id}}").unwrap();
        assert_eq!(t.render_value(&ctx()).unwrap(), json!(11));
        let t = Template::compile("{{filters.labels}}").unwrap();
        assert_eq!(t.render_value(&ctx()).unwrap(), json!(["a", "b"]));
        let t = Template::compile(" {{filters.owner_id}}").unwrap();
        assert_eq!(t.render_value(&ctx()).unwrap(), json!(" 11"));
        let t = Template::compile("{{since}}").unwrap();
        assert_eq!(t.render_value(&ctx()).unwrap(), Value::Null);
        let t = Template::compile("{{default since 0}}").unwrap();
        assert_eq!(t.render_value(&ctx()).unwrap(), json!(0));
        let t = Template::compile("id {{filters.owner_id}}").unwrap();
        assert_eq!(t.render_value(&ctx()).unwrap(), json!("id 11"));
        let t = Template::compile("{{format_time now \"unix_millis\"}}").unwrap();
        assert_eq!(t.render_value(&ctx()).unwrap(), json!(1714557600000i64));
    }

    #[test]
    fn strict_mode_refuses_missing_variables() {
        let t = Template::compile("{{settings.missing}}").unwrap();
        let error = t.render(&ctx(), Escape::None).unwrap_err();
        assert_eq!(error.message, "variable `settings.missing` is not set");
    }

    #[test]
    fn variables_include_blocks_and_helper_arguments() {
        let t = Template::compile(
            "{{#if filters.owner_id}}o={{filters.owner_id}}{{/if}}\
             {{#each filters.labels}}{{this}}{{@index}}{{name}}{{@root.settings.region}}{{/each}}\
             {{format_time (default since now) \"date\"}}{{#unless settings.x}}{{page}}{{else}}{{offset}}{{/unless}}",
        )
        .unwrap();
        assert_eq!(
            t.variables(),
            vec![
                "filters.labels",
                "filters.owner_id",
                "now",
                "offset",
                "page",
                "settings.region",
                "settings.x",
                "since"
            ]
        );
        assert_eq!(
            t.helpers(),
            vec!["default", "each", "format_time", "if", "unless"]
        );
    }

    #[test]
    fn else_if_chains_and_subexpressions_are_walked() {
        let t = Template::compile(
            "{{#if settings.a}}a{{else if settings.b}}b{{else}}{{json (default filters.c cursor)}}{{/if}}",
        )
        .unwrap();
        assert_eq!(
            t.variables(),
            vec!["cursor", "filters.c", "settings.a", "settings.b"]
        );
        let error = Template::compile("{{#if x}}{{else if (shout y)}}{{/if}}").unwrap_err();
        assert!(
            error.message.starts_with("unknown helper `shout`"),
            "{error}"
        );
    }

    #[test]
    fn unknown_helpers_and_syntax_errors_fail_at_compile_time() {
        let error = Template::compile("a {{shout credentials.api_key}}").unwrap_err();
        assert!(
            error.message.starts_with("unknown helper `shout`"),
            "{error}"
        );
        assert_eq!((error.line, error.column), (Some(1), Some(3)));
        let error = Template::compile("{{#if x}}").unwrap_err();
        assert!(error.message.starts_with("invalid template"), "{error}");
        assert!(Template::compile("{{> partial}}").is_err());
        assert!(Template::compile("{{log \"x\"}}").is_err());
    }

    #[test]
    fn helpers_render() {
        let c = ctx();
        let r = |s: &str| {
            Template::compile(s)
                .unwrap()
                .render(&c, Escape::None)
                .unwrap()
        };
        assert_eq!(
            r("{{base64 credentials.user credentials.password}}"),
            "YWRhOnNlY3JldA=="
        );
        assert_eq!(r("{{urlencode \"a b&c\"}}"), "a%20b%26c");
        assert_eq!(r("{{default filters.empty \"x\"}}"), "x");
        assert_eq!(r("{{join filters.labels \",\"}}"), "a,b");
        assert_eq!(r("{{json filters.labels}}"), "[\"a\",\"b\"]");
        assert_eq!(r("{{format_time now \"%Y/%m/%d\"}}"), "2024/05/01");
        assert_eq!(r("{{format_time since \"date\"}}"), "");
    }

    #[test]
    fn json_bodies_drop_empty_entries() {
        let body = json!({
            "filterGroups": [{"filters": [
                {"propertyName": "lastmodifieddate", "operator": "GTE",
                 "value": "{{format_time since \"unix_millis\"}}"}
            ]}],
            "owner": "{{filters.owner_id}}",
            "missing": "{{filters.empty}}",
            "limit": "{{page}}",
            "fixed": true
        });
        let t = JsonTemplate::compile(&body).unwrap();
        assert_eq!(
            t.render(&ctx()).unwrap(),
            json!({"owner": 11, "limit": 2, "fixed": true})
        );
        let mut c = ctx();
        c["since"] = json!("2024-05-01T10:00:00Z");
        assert_eq!(
            t.render(&c).unwrap()["filterGroups"][0]["filters"][0]["value"],
            json!(1714557600000i64)
        );
    }
}
