//! Each shipped connector (the very file in `connectors.d/`) against a faithful fake of
//! its service (`common::services`), through the real loader, engine and store: pages,
//! contacts, custom fields with their tags, consent states, a filter, the requests the
//! service received, and for incremental connectors a second run that fetches only what
//! changed (issue 18).

mod batchbook;
mod bigcommerce;
mod bigcommerce_v2;
mod dynamics365;
mod freshsales;
mod google_people;
mod heap;
mod hubspot;
mod hubspot_search;
mod intercom;
mod keap;
mod klaviyo;
mod mailchimp;
mod microsoft_graph;
mod nimble;
mod pipedrive;
mod pipedrive_v1;
mod salesforce;
mod salesforce_leads;
mod shopify;
mod stripe;
mod sugarcrm;
mod tactile;
mod woocommerce;
mod zoho;
mod zoho_coql;

use std::path::Path;

use crate::common::sync_env::SyncEnv;
use tributary::store::{ContactStatus, ContactView, MembershipStatus};

/// The shipped connector `id` with every `http(s)://host` replaced by `base` (the fake's
/// `http://127.0.0.1:PORT`): paths, parameters, mapping and everything else stay as
/// shipped. A host ending in a template (`https://{{settings.dc}}.api.mailchimp.com`)
/// goes whole; `{{/if}}` after a host is kept.
pub fn shipped(id: &str, base: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("connectors.d/{id}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("http") {
        let tail = &rest[at..];
        let scheme = ["https://", "http://"]
            .into_iter()
            .find(|s| tail.starts_with(s));
        let Some(scheme) = scheme else {
            out.push_str(&rest[..at + 4]);
            rest = &rest[at + 4..];
            continue;
        };
        out.push_str(&rest[..at]);
        let host = &tail[scheme.len()..];
        let mut end = host
            .find(|c: char| c == '/' || c == '"' || c == '\'' || c.is_whitespace())
            .unwrap_or(host.len());
        if host[..end].ends_with("{{") {
            end -= 2;
        }
        out.push_str(base);
        rest = &host[end..];
    }
    out.push_str(rest);
    out
}

/// A contact by email.
pub fn contact<'a>(contacts: &'a [ContactView], email: &str) -> &'a ContactView {
    contacts
        .iter()
        .find(|c| c.email == email)
        .unwrap_or_else(|| panic!("{email} was not imported"))
}

/// The status of `contact`'s membership in `list` (`None`: not a member).
pub fn membership(contact: &ContactView, list: &str) -> Option<MembershipStatus> {
    contact
        .lists
        .iter()
        .find(|m| m.list == list)
        .map(|m| m.status)
}

/// `(email, contact status, membership in list)` of everyone, for one assertion over
/// the consent states.
pub async fn consent(
    env: &SyncEnv,
    list: &str,
) -> Vec<(String, ContactStatus, Option<MembershipStatus>)> {
    env.all_contacts()
        .await
        .iter()
        .map(|c| (c.email.clone(), c.status, membership(c, list)))
        .collect()
}

/// Runs `importer`, which must fail on its credentials: the error says one of `says`
/// (the service's own words or its status) and shows none of `secrets`.
pub async fn refused(env: &SyncEnv, importer: &str, says: &[&str], secrets: &[&str]) {
    let error = env.run(importer).await.unwrap_err().to_string();
    assert!(says.iter().any(|s| error.contains(s)), "{error}");
    for secret in secrets {
        assert!(!error.contains(secret), "{error}");
    }
}

#[test]
fn shipped_rehosts_every_host_and_keeps_the_rest() {
    let text = shipped("pipedrive", "http://127.0.0.1:9");
    assert!(
        text.contains("{{else}}http://127.0.0.1:9{{/if}}/api/v2"),
        "{text}"
    );
    assert!(!text.contains("pipedrive.com{{"), "{text}");
    let text = shipped("mailchimp", "http://127.0.0.1:9");
    assert!(
        text.contains("base_url: http://127.0.0.1:9/3.0\n"),
        "{text}"
    );
}

/// Every shipped connector has an example importer in `importers.d/`, shipped disabled
/// (credentials are references, which `config::every_repository_connector_and_importer_validates`
/// checks with the rest of the tree).
#[test]
fn every_shipped_connector_has_a_disabled_example_importer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut examples = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(root.join("importers.d")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let connector = text
            .lines()
            .find_map(|l| l.strip_prefix("connector: "))
            .unwrap_or_else(|| panic!("{} names no connector", path.display()))
            .trim()
            .to_string();
        assert!(
            text.lines().any(|l| l.trim() == "enabled: false"),
            "{} is not disabled",
            path.display()
        );
        examples.insert(connector, path);
    }
    for entry in std::fs::read_dir(root.join("connectors.d")).unwrap() {
        let path = entry.unwrap().path();
        let id = path.file_stem().unwrap().to_str().unwrap();
        assert!(examples.contains_key(id), "no example importer for {id}");
    }
}
