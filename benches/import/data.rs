//! The benchmark's contacts: generated from their id alone, so the fake service, the
//! reference pipeline and the store checks agree on every value without sharing state.
//!
//! A person looks like a Pipedrive v1 `/persons` record (owner and organization expanded
//! into objects, custom fields at the top level under 40-hex-digit keys, `YYYY-MM-DD
//! HH:MM:SS` times in UTC), about 1.6 kB of JSON. Emails are ordered randomly with
//! respect to ids and update times, so store writes hit random B-tree keys as they do
//! with real data. Nothing here does I/O.

use chrono::{DateTime, Utc};
use serde_json::json;

/// Custom field keys as Pipedrive v1 names them (40 hex digits), with the connector's
/// labels: text, number, date, list from a JSON array, list from a delimited string.
pub const CF_SEGMENT: &str = "5a1c3f0e9b8d7c6a5f4e3d2c1b0a998877665544";
pub const CF_LIFETIME_VALUE: &str = "0b7e2d9c4a1f3e8d6c5b4a3928171615141312a1";
pub const CF_CONTRACT_START: &str = "c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4";
pub const CF_INTERESTS: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432";
pub const CF_TAGS: &str = "1234abcd5678ef901234abcd5678ef901234abcd";

/// 2020-01-01T00:00:00Z: the first contact's update time.
const BASE_TIME: i64 = 1_577_836_800;
/// Seconds between two contacts' initial update times (distinct, ascending with id).
const TIME_STEP: i64 = 17;

const FIRST: [&str; 24] = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Margaret",
    "Dennis",
    "Radia",
    "Niklaus",
    "Sophie",
    "John",
    "Hedy",
    "Tim",
    "Karen",
    "Leslie",
    "Mary",
    "Claude",
    "Shafi",
    "Whitfield",
    "Anita",
    "Bjarne",
];
const LAST: [&str; 24] = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Hamilton",
    "Ritchie",
    "Perlman",
    "Wirth",
    "Wilson",
    "McCarthy",
    "Lamarr",
    "Berners-Lee",
    "Jones",
    "Lamport",
    "Keller",
    "Shannon",
    "Goldwasser",
    "Diffie",
    "Borg",
    "Stroustrup",
];
const DOMAINS: [&str; 6] = [
    "Example.com",
    "example.org",
    "mail.example.net",
    "corp.example",
    "example.co.uk",
    "shop.example.de",
];
const SEGMENTS: [&str; 5] = [
    "Enterprise",
    "Mid-market",
    "SMB",
    "Startup",
    "Public sector",
];
const INTERESTS: [&str; 8] = [
    "newsletters",
    "webinars",
    "product updates",
    "events",
    "case studies",
    "pricing",
    "api",
    "integrations",
];
const TAGS: [&str; 6] = [
    "vip",
    "newsletter",
    "trial",
    "partner",
    "churn-risk",
    "2024",
];

/// SplitMix64: a fixed, dependency-free mix so every run generates the same data.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Initial update time (unix seconds) of contact `id`.
pub fn initial_update_time(id: u64) -> i64 {
    BASE_TIME + id as i64 * TIME_STEP
}

/// Whether the `generation`-th "1 % changed" touches contact `id`: exactly `percent` of
/// every hundred consecutive ids, a different residue each generation.
pub fn changed_in(id: u64, generation: u32, percent: u32) -> bool {
    (id + u64::from(generation) * 7) % 100 < u64::from(percent)
}

/// The values a contact must have in the store after an import, derived from its id and
/// how many times it was changed (`version`).
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub id: u64,
    /// As the service writes it (mixed case).
    pub email: String,
    /// Normalized: what the store keys on.
    pub email_normalized: String,
    pub secondary_email: String,
    pub first_name: String,
    pub last_name: String,
    pub phone: String,
    pub organization: String,
    pub segment: String,
    pub lifetime_value: f64,
    /// `YYYY-MM-DD`.
    pub contract_start: String,
    pub interests: Vec<String>,
    pub tags: Vec<String>,
}

/// Expected values of contact `id` at `version`.
pub fn expected(id: u64, version: u32) -> Expected {
    let h = mix(id);
    let first = FIRST[(h % 24) as usize];
    let last = LAST[((h >> 8) % 24) as usize];
    let domain = DOMAINS[((h >> 16) % 6) as usize];
    // The hash prefix makes email order random with respect to id.
    let email = format!("{first}.{last}.{:08x}@{domain}", (h >> 32) as u32);
    let email_normalized = email.to_lowercase();
    let secondary_email = format!("{}{}@home.example.net", first.to_lowercase(), id);
    let phone = format!("+49 30 {:07}", (h >> 20) % 10_000_000);
    let organization = format!(
        "{} {} GmbH",
        LAST[((h >> 28) % 24) as usize],
        (h >> 40) % 500
    );
    let segment = if version == 0 {
        SEGMENTS[((h >> 44) % 5) as usize].to_string()
    } else {
        format!("{} (rev {version})", SEGMENTS[((h >> 44) % 5) as usize])
    };
    let lifetime_value = ((h >> 12) % 1_000_000) as f64 / 100.0 + f64::from(version) * 10.0;
    let contract_start = {
        let day = (h >> 24) % 1500;
        let date = DateTime::<Utc>::from_timestamp(1_420_070_400 + day as i64 * 86_400, 0)
            .expect("in range")
            .date_naive();
        date.format("%Y-%m-%d").to_string()
    };
    let n_interests = 1 + (h >> 50) % 3;
    let interests = (0..n_interests)
        .map(|k| INTERESTS[((h >> (52 + k * 3)) % 8) as usize].to_string())
        .fold(Vec::<String>::new(), dedup);
    let n_tags = 1 + (h >> 58) % 3;
    let tags = (0..n_tags)
        .map(|k| TAGS[((h >> (4 + k * 5)) % 6) as usize].to_string())
        .fold(Vec::<String>::new(), dedup);
    Expected {
        id,
        email,
        email_normalized,
        secondary_email,
        first_name: first.to_string(),
        last_name: last.to_string(),
        phone,
        organization,
        segment,
        lifetime_value,
        contract_start,
        interests,
        tags,
    }
}

fn dedup(mut values: Vec<String>, value: String) -> Vec<String> {
    if !values.contains(&value) {
        values.push(value);
    }
    values
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, Pipedrive v1's time format.
pub fn v1_time(unix: i64) -> String {
    DateTime::<Utc>::from_timestamp(unix, 0)
        .expect("in range")
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// The JSON text of contact `id` at `version`, last updated at `update_time`.
pub fn record_json(id: u64, version: u32, update_time: i64) -> Vec<u8> {
    let e = expected(id, version);
    let h = mix(id);
    let owner = 1 + (h >> 36) % 40;
    let org_id = 1 + (h >> 40) % 500;
    let add_time = initial_update_time(id) - 86_400 * (1 + ((h >> 30) % 300) as i64);
    // One in five records lists the secondary address first, so the primary flag, not
    // the position, must pick the email.
    let primary = json!({"label": "work", "value": e.email, "primary": true});
    let secondary = json!({"label": "home", "value": e.secondary_email, "primary": false});
    let emails = if h.is_multiple_of(5) {
        json!([secondary, primary])
    } else {
        json!([primary, secondary])
    };
    let mut record = json!({
        "id": id,
        "company_id": 7_654_321,
        "owner_id": {
            "id": owner,
            "name": format!("Account Owner {owner}"),
            "email": format!("owner{owner}@seller.example"),
            "has_pic": 0,
            "pic_hash": null,
            "active_flag": true,
            "value": owner
        },
        "org_id": {
            "name": e.organization,
            "people_count": 1 + (h >> 33) % 60,
            "owner_id": owner,
            "address": format!("{} Hauptstrasse, 10115 Berlin, Germany", 1 + (h >> 45) % 200),
            "active_flag": true,
            "cc_email": format!("company-{org_id}@pipedrivemail.com"),
            "label_ids": [],
            "value": org_id
        },
        "name": format!("{} {}", e.first_name, e.last_name),
        "first_name": e.first_name,
        "last_name": e.last_name,
        "open_deals_count": (h >> 3) % 4,
        "closed_deals_count": (h >> 5) % 6,
        "email_messages_count": (h >> 7) % 90,
        "activities_count": (h >> 9) % 30,
        "done_activities_count": (h >> 11) % 20,
        "undone_activities_count": (h >> 13) % 5,
        "files_count": 0,
        "notes_count": (h >> 15) % 8,
        "followers_count": 1,
        "won_deals_count": (h >> 17) % 3,
        "lost_deals_count": (h >> 19) % 2,
        "active_flag": true,
        "phones": [
            {"label": "work", "value": e.phone, "primary": true},
            {"label": "mobile", "value": format!("+49 171 {:07}", (h >> 27) % 10_000_000), "primary": false}
        ],
        "emails": emails,
        "first_char": e.first_name[..1].to_lowercase(),
        "update_time": v1_time(update_time),
        "delete_time": null,
        "add_time": v1_time(add_time),
        "visible_to": "3",
        "next_activity_date": null,
        "next_activity_id": null,
        "last_activity_id": 100_000 + (h >> 21) % 900_000,
        "last_activity_date": v1_time(update_time)[..10].to_string(),
        "last_incoming_mail_time": v1_time(update_time - 3_600),
        "label": null,
        "label_ids": [(h >> 23) % 5 + 1],
        "marketing_status": "subscribed",
        "org_name": e.organization,
    });
    let custom = record.as_object_mut().expect("object");
    custom.insert(CF_SEGMENT.into(), json!(e.segment));
    custom.insert(CF_LIFETIME_VALUE.into(), json!(e.lifetime_value));
    custom.insert(CF_CONTRACT_START.into(), json!(e.contract_start));
    custom.insert(CF_INTERESTS.into(), json!(e.interests));
    custom.insert(CF_TAGS.into(), json!(e.tags.join(";")));
    serde_json::to_vec(&record).expect("serializable")
}
