//! Compiles a connector's `auth` schemes. `token.*` exists only in the templates an
//! `oauth2` or `session` scheme feeds (and never in what obtains the token itself).

use std::collections::BTreeMap;

use crate::config::compile::context::{TemplateCx, duration_or, join};
use crate::config::spec::{
    ApiKeySpec, AuthSpec, BasicSpec, BearerSpec, ConnectorSpec, HeaderAuthSpec, Oauth2Spec,
    SessionSpec,
};
use crate::plan::{Auth, Oauth2Grant, defaults};
use crate::template::Template;

/// Why `token.*` cannot be used outside auth schemes, if it cannot: only a connector
/// with an `oauth2` or `session` scheme has a token.
pub(super) fn token_blocked_outside_auth(spec: &ConnectorSpec) -> Option<String> {
    let has_token_scheme = spec
        .auth
        .values()
        .any(|a| matches!(a, AuthSpec::Oauth2(_) | AuthSpec::Session(_)));
    (!has_token_scheme).then(|| "this connector has neither".to_string())
}

/// `auth`: every scheme, by name. What each scheme's templates read is recorded apart,
/// so that an importer is asked only for the credentials of the scheme it picks.
pub(super) fn schemes(cx: &mut TemplateCx, spec: &ConnectorSpec) -> BTreeMap<String, Auth> {
    let mut auth = BTreeMap::new();
    for (name, scheme_spec) in &spec.auth {
        let key = format!("auth.{name}");
        cx.scheme = Some(name.clone());
        cx.rules.token_blocked_by = match scheme_spec {
            AuthSpec::Oauth2(_) | AuthSpec::Session(_) => None,
            other => Some(format!("this scheme is `{}`", <&str>::from(other))),
        };
        if let Some(compiled) = scheme(cx, &key, scheme_spec) {
            auth.insert(name.clone(), compiled);
        }
    }
    cx.scheme = None;
    cx.rules.token_blocked_by = token_blocked_outside_auth(spec);
    auth
}

/// One scheme; `None` when a template in it does not compile.
fn scheme(cx: &mut TemplateCx, key: &str, spec: &AuthSpec) -> Option<Auth> {
    let k = |child: &str| join(key, child);
    Some(match spec {
        AuthSpec::None(_) => Auth::None,
        AuthSpec::ApiKey(ApiKeySpec {
            location,
            name,
            value,
        }) => {
            if name.trim().is_empty() {
                cx.file.error(&k("name"), "must not be empty");
            }
            Auth::ApiKey {
                location: *location,
                name: name.clone(),
                value: cx.template(&k("value"), value)?,
            }
        }
        AuthSpec::Bearer(BearerSpec { token }) => Auth::Bearer {
            token: cx.template(&k("token"), token)?,
        },
        AuthSpec::Basic(BasicSpec { username, password }) => {
            let username = cx.template(&k("username"), username);
            let password = match password {
                Some(p) => Some(cx.template(&k("password"), p)?),
                None => None,
            };
            Auth::Basic {
                username: username?,
                password,
            }
        }
        AuthSpec::Oauth2(Oauth2Spec {
            grant,
            token_url,
            client_id,
            client_secret,
            refresh_token,
            authorize_url,
            private_key,
            subject,
            audience,
            client_auth,
            scopes,
            rotates_refresh_token,
        }) => {
            let grant = grant.unwrap_or_default();
            let jwt = grant == Oauth2Grant::JwtBearer;
            let needs = |cx: &mut TemplateCx, field: &str, value: &Option<String>, wanted: bool| {
                let grant_name: &str = grant.into();
                match (value, wanted) {
                    (None, true) => cx
                        .file
                        .error(key, format!("the `{grant_name}` grant needs `{field}`")),
                    (Some(_), false) => cx.file.error(
                        &k(field),
                        format!("the `{grant_name}` grant has no use for `{field}`"),
                    ),
                    _ => {}
                }
            };
            needs(cx, "client_secret", client_secret, !jwt);
            needs(cx, "private_key", private_key, jwt);
            if grant != Oauth2Grant::RefreshToken {
                needs(cx, "authorize_url", authorize_url, false);
            }
            if !jwt {
                needs(cx, "subject", subject, false);
                needs(cx, "audience", audience, false);
            }
            needs(
                cx,
                "refresh_token",
                refresh_token,
                grant == Oauth2Grant::RefreshToken,
            );
            if *rotates_refresh_token && grant != Oauth2Grant::RefreshToken {
                cx.file.error(
                    &k("rotates_refresh_token"),
                    "only the `refresh_token` grant has a refresh token to rotate",
                );
            }
            let token_url = cx.template(&k("token_url"), token_url);
            let client_id = cx.template(&k("client_id"), client_id);
            let optional = |cx: &mut TemplateCx, field: &str, value: &Option<String>| {
                value.as_ref().map(|v| cx.template(&k(field), v))
            };
            let client_secret = optional(cx, "client_secret", client_secret);
            let refresh_token = optional(cx, "refresh_token", refresh_token);
            let authorize_url = optional(cx, "authorize_url", authorize_url);
            let private_key = optional(cx, "private_key", private_key);
            let subject = optional(cx, "subject", subject);
            let audience = optional(cx, "audience", audience);
            let scopes: Vec<Option<Template>> = scopes
                .iter()
                .enumerate()
                .map(|(i, scope)| cx.template(&k(&format!("scopes[{i}]")), scope))
                .collect();
            for (i, scope) in scopes.iter().enumerate() {
                if let Some(t) = scope
                    && t.variables().iter().any(|v| v.starts_with("token."))
                {
                    cx.file.error(
                        &k(&format!("scopes[{i}]")),
                        "`token.*` comes from the token response and cannot be used to get it",
                    );
                }
            }
            for (field, template) in [
                ("token_url", token_url.as_ref()),
                ("client_id", client_id.as_ref()),
                (
                    "client_secret",
                    client_secret.as_ref().and_then(Option::as_ref),
                ),
                (
                    "refresh_token",
                    refresh_token.as_ref().and_then(Option::as_ref),
                ),
            ] {
                if let Some(t) = template
                    && t.variables().iter().any(|v| v.starts_with("token."))
                {
                    cx.file.error(
                        &k(field),
                        "`token.*` comes from the token response and cannot be used to get it",
                    );
                }
            }
            Auth::Oauth2 {
                grant,
                token_url: token_url?,
                client_id: client_id?,
                client_secret: client_secret.map(|t| t.ok_or(())).transpose().ok()?,
                refresh_token: refresh_token.map(|t| t.ok_or(())).transpose().ok()?,
                authorize_url: authorize_url.map(|t| t.ok_or(())).transpose().ok()?,
                private_key: private_key.map(|t| t.ok_or(())).transpose().ok()?,
                subject: subject.map(|t| t.ok_or(())).transpose().ok()?,
                audience: audience.map(|t| t.ok_or(())).transpose().ok()?,
                client_auth: client_auth.unwrap_or_default(),
                scopes: scopes.into_iter().collect::<Option<Vec<_>>>()?,
                rotates_refresh_token: *rotates_refresh_token,
            }
        }
        AuthSpec::Session(SessionSpec {
            login,
            token,
            ttl,
            headers,
            query,
        }) => {
            let saved = cx
                .rules
                .token_blocked_by
                .replace("the login request runs before there is a session".to_string());
            let login = cx.request(&k("login"), login);
            cx.rules.token_blocked_by = saved;
            let token = cx.path(&k("token"), token);
            let headers = cx.map(&k("headers"), headers);
            let query = cx.map(&k("query"), query);
            if headers.is_empty() && query.is_empty() {
                cx.file.error(
                    key,
                    "a session must be sent somewhere: give `headers` or `query` using `{{token.session}}`",
                );
            }
            let ttl = duration_or(ttl.as_ref(), defaults::SESSION_TTL);
            if ttl.is_zero() {
                cx.file.error(&k("ttl"), "must be longer than zero");
            }
            Auth::Session {
                login: login?,
                token: token?,
                ttl,
                headers,
                query,
            }
        }
        AuthSpec::Header(HeaderAuthSpec { headers }) => {
            if headers.is_empty() {
                cx.file.error(&k("headers"), "give at least one header");
            }
            Auth::Header {
                headers: cx.map(&k("headers"), headers),
            }
        }
    })
}
