//! The sync engine end to end: fake services on 127.0.0.1, real connector and importer
//! files through the real loader, the real engine, a real store; each test asserts the
//! exact contacts, values and memberships stored afterwards.

mod auth;
mod backoff;
mod bad_data;
mod change_token;
mod cli;
pub(crate) mod crash;
mod deletions;
mod error_rules;
mod fakes;
mod incremental;
mod oauth;
mod passes;
mod ratelimit;
pub(crate) mod redirects;
mod runs;
mod styles;

use crate::common::fake::Person;
use crate::common::sync_env::SyncEnv;
use tributary::store::MembershipStatus;

/// Asserts the list holds exactly `expected` (emails, first and last names), each an
/// active member of `list`.
pub async fn assert_people(env: &SyncEnv, list: &str, expected: &[Person]) {
    let stored = env.contacts(list).await;
    let mut want: Vec<(String, String, String)> = expected
        .iter()
        .map(|p| {
            (
                p.email.clone().unwrap().to_lowercase(),
                p.first.clone(),
                p.last.clone(),
            )
        })
        .collect();
    want.sort();
    let got: Vec<(String, String, String)> = stored
        .iter()
        .map(|c| {
            (
                c.email.clone(),
                c.first_name.clone().unwrap_or_default(),
                c.last_name.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(got, want, "contacts of list `{list}`");
    for contact in &stored {
        let membership = contact
            .lists
            .iter()
            .find(|m| m.list == list)
            .unwrap_or_else(|| panic!("{} is not in `{list}`", contact.email));
        assert_eq!(
            membership.status,
            MembershipStatus::Active,
            "{} in `{list}`",
            contact.email
        );
    }
}
