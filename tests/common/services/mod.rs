//! The real services, as data for the harness in `service.rs`: one module per service,
//! each behaviour citing its source (the vendor's reference, or
//! `../shared/reference/services.md` / `connector-review.md` with the sources they cite),
//! or saying it is unverified.

pub mod batchbook;
pub mod bigcommerce;
pub mod bigcommerce_v2;
pub mod dynamics365;
pub mod freshsales;
pub mod google_people;
pub mod heap;
pub mod hubspot;
pub mod intercom;
pub mod keap;
pub mod klaviyo;
pub mod mailchimp;
pub mod microsoft_graph;
pub mod nimble;
pub mod pipedrive;
pub mod pipedrive_v1;
pub mod salesforce;
pub mod shopify;
pub mod stripe;
pub mod sugarcrm;
pub mod tactile;
pub mod woocommerce;
pub mod zoho;
