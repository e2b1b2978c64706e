//! `tributary auth <importer>`: obtaining an importer's first refresh token, or consenting
//! again after one was revoked, without leaving the server.
//!
//! The authorization-code grant with PKCE (RFC 6749 4.1, RFC 7636 S256): the command
//! prints the URL to open in any browser, receives the code on a loopback redirect
//! (`http://127.0.0.1:PORT/callback`; with `--paste`, the redirected URL or the code typed
//! in), exchanges it, and keeps the refresh token where the importer's credential
//! reference points when that is a file (written readable by its owner only), or else
//! encrypted in the store as the account's, used by the next run.

use std::collections::HashMap;
use std::io::BufRead as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use rand::Rng as _;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::app::{self, exit};
use crate::engine::client::Client;
use crate::plan::{Auth, Importer, Limits, SecretRef};
use crate::store::Store;

/// Arguments of `auth`.
#[derive(Debug, clap::Args)]
pub struct AuthArgs {
    /// The importer whose account to consent for.
    pub importer: String,
    /// Where the loopback listener receiving the redirect listens. Default: a free port
    /// on 127.0.0.1; give a fixed one when the service wants its redirect URI registered.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Read the redirected URL (or the bare code) from standard input instead of
    /// listening, for a browser on another machine. Needs a fixed `--listen` port, the
    /// one registered at the service.
    #[arg(long)]
    pub paste: bool,
}

/// Where the refresh token was kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// Written to the file the importer's credential reference names.
    File(String),
    /// Kept, encrypted, in the store as the account's.
    Store,
}

/// Runs `auth`.
pub fn execute(config: Option<&Path>, args: &AuthArgs) -> anyhow::Result<i32> {
    let path = app::config_path(config);
    let plan = match app::load_strict(&path) {
        Ok(plan) => plan,
        Err(diagnostics) => {
            app::print_diagnostics(&diagnostics);
            return Ok(exit::CONFIG);
        }
    };
    let Some(importer) = plan.importers.get(&args.importer).cloned() else {
        bail!("no importer `{}`", args.importer);
    };
    app::small_runtime()?.block_on(async {
        let store = app::open_store(&plan.daemon).await?;
        let stdin = || {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).map(|_| line)
        };
        let kept = consent(
            importer,
            Arc::clone(&store),
            plan.daemon.limits,
            &args.listen,
            args.paste
                .then_some(&stdin as &(dyn Fn() -> std::io::Result<String> + Sync)),
            &|url: &str| {
                println!("Open this URL in a browser and consent:\n\n  {url}\n");
                if args.paste {
                    println!("Then paste the address the browser was sent to (or the code):");
                } else {
                    println!("Waiting for the service to redirect the browser back here...");
                }
            },
        )
        .await;
        store.close().await;
        match kept? {
            Kept::File(path) => println!(
                "importer {}: refresh token written to {path}",
                args.importer
            ),
            Kept::Store => println!(
                "importer {}: refresh token kept, encrypted, in the store; the next run uses it",
                args.importer
            ),
        }
        Ok(exit::OK)
    })
}

/// The consent itself: `show` is given the URL to open; `paste`, when given, reads what
/// the person pastes instead of a loopback listener receiving the redirect.
///
/// # Errors
/// An importer whose scheme cannot consent, a refused consent, a token endpoint refusing
/// the code, a file that cannot be written.
pub async fn consent(
    importer: Arc<Importer>,
    store: Arc<dyn Store>,
    limits: Limits,
    listen: &str,
    paste: Option<&(dyn Fn() -> std::io::Result<String> + Sync)>,
    show: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<Kept> {
    let Some(Auth::Oauth2 {
        refresh_token: Some(template),
        authorize_url: Some(_),
        ..
    }) = importer.auth()
    else {
        bail!(
            "importer `{}`: its auth scheme is not oauth2 with a refresh token and an authorize_url",
            importer.id
        );
    };
    let names: Vec<String> = template
        .variables()
        .iter()
        .filter_map(|v| v.strip_prefix("credentials.").map(str::to_string))
        .collect();
    let [name] = names.as_slice() else {
        bail!(
            "importer `{}`: the scheme's refresh_token must be one credential, such as {{{{credentials.refresh_token}}}}",
            importer.id
        );
    };
    let reference = importer.credentials.get(name).cloned();
    let file = match &reference {
        Some(SecretRef::File(path)) => Some(path.clone()),
        _ => None,
    };
    let mut client = Client::for_consent(Arc::clone(&importer), store, limits, name)?;

    let verifier: String = {
        const UNRESERVED: &[u8] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
        let mut rng = rand::rng();
        (0..64)
            .map(|_| UNRESERVED[rng.random_range(0..UNRESERVED.len())] as char)
            .collect()
    };
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let state: String = (0..32)
        .map(|_| rand::rng().sample(rand::distr::Alphanumeric) as char)
        .collect();

    let listener = match paste {
        Some(_) => None,
        None => Some(
            tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("listening on {listen} for the redirect"))?,
        ),
    };
    let port = match &listener {
        Some(listener) => listener.local_addr()?.port(),
        None => listen
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .filter(|p| *p != 0)
            .context("--paste needs --listen with the port registered at the service")?,
    };
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    show(&client.consent_url(&redirect_uri, &challenge, &state)?);
    let code = match (listener, paste) {
        (Some(listener), _) => receive(listener, &state).await?,
        (None, Some(read)) => pasted(&read()?, &state)?,
        (None, None) => unreachable!("a listener unless pasting"),
    };
    let refresh = client
        .exchange_code(&code, &redirect_uri, &verifier, file.is_none())
        .await?;
    match file {
        Some(path) => {
            write_private(Path::new(&path), &refresh)
                .with_context(|| format!("writing the refresh token to {path}"))?;
            Ok(Kept::File(path))
        }
        None => Ok(Kept::Store),
    }
}

/// Waits for the redirect on the loopback listener and answers the browser.
async fn receive(listener: tokio::net::TcpListener, state: &str) -> anyhow::Result<String> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        let mut head = Vec::new();
        let mut buffer = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            let n = stream.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buffer[..n]);
        }
        let text = String::from_utf8_lossy(&head);
        let target = text.split(' ').nth(1).unwrap_or("/");
        let url = url::Url::parse(&format!("http://127.0.0.1{target}"))?;
        let answer = |status: &str, text: &str| {
            format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            )
        };
        if url.path() != "/callback" {
            stream
                .write_all(answer("404 Not Found", "not here").as_bytes())
                .await?;
            continue;
        }
        let outcome = from_query(&url, state);
        let reply = match &outcome {
            Ok(_) => answer(
                "200 OK",
                "Tributary has the authorization. You may close this window.",
            ),
            Err(error) => answer("400 Bad Request", &format!("Tributary: {error}")),
        };
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await.ok();
        return outcome;
    }
}

/// The code of a pasted redirected URL, or a bare code.
fn pasted(text: &str, state: &str) -> anyhow::Result<String> {
    let text = text.trim();
    match url::Url::parse(text) {
        Ok(url) => from_query(&url, state),
        Err(_) if !text.is_empty() => Ok(text.to_string()),
        Err(_) => bail!("nothing was pasted"),
    }
}

/// The code of a redirect, checked against the state sent (a redirect of another
/// consent, or forged, is refused).
fn from_query(url: &url::Url, state: &str) -> anyhow::Result<String> {
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    if let Some(error) = query.get("error") {
        bail!("the service did not give consent: {error}");
    }
    if query.get("state").map(String::as_str) != Some(state) {
        bail!("the redirect's state is not this consent's; nothing was kept");
    }
    query
        .get("code")
        .filter(|c| !c.is_empty())
        .cloned()
        .context("the redirect has no code")
}

/// Writes `value` to `path`, readable by its owner only, replacing it whole.
fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let temporary = path.with_extension("tributary-new");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(value.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}
