//! The import rules of issue #3, each on both backends.

use tributary::model::personalization_tag;
use tributary::model::{CustomFieldDef, CustomFieldType, FieldValue, SubscriptionMeaning};
use tributary::store::{
    Backend, ChangeKind, ContactFilter, ContactStatus, ContactView, FieldChange, FieldOrigin,
    MembershipStatus, StoreError, UnsubscribeScope,
};

use super::harness::{Ctx, RecordExt, importer, on_both_backends, rec};

async fn contact(ctx: &Ctx, email: &str) -> ContactView {
    let filter = ContactFilter {
        email: Some(email.to_string()),
        ..ContactFilter::default()
    };
    let mut found = ctx.store.contacts(&filter).await.unwrap();
    assert_eq!(found.len(), 1, "one contact for {email}");
    found.remove(0)
}

fn membership(view: &ContactView, list: &str) -> Option<MembershipStatus> {
    view.lists.iter().find(|m| m.list == list).map(|m| m.status)
}

async fn upsert_by_normalized_email_merges_page_duplicates(ctx: Ctx) {
    let crm = importer(&ctx.store, "crm", "customers").await;
    let page = [
        rec("Ada@Example.COM").first("Ada"),
        rec("bob@example.com").first("Bob"),
        rec("  ada@example.com ").last("Lovelace"),
    ];
    let outcome = crm.write(&ctx.store, &page).await.unwrap();
    assert_eq!(outcome.created, 2);
    assert_eq!(ctx.count("SELECT COUNT(*) FROM contacts").await, 2);
    let ada = contact(&ctx, "ADA@example.com").await;
    assert_eq!(ada.email, "ada@example.com");
    assert_eq!(ada.first_name.as_deref(), Some("Ada"));
    assert_eq!(ada.last_name.as_deref(), Some("Lovelace"));

    // The same email again in a later page updates the one contact.
    let outcome = crm
        .write(&ctx.store, &[rec("ADA@EXAMPLE.com").first("Augusta")])
        .await
        .unwrap();
    assert_eq!((outcome.created, outcome.updated), (0, 1));
    assert_eq!(ctx.count("SELECT COUNT(*) FROM contacts").await, 2);
    assert_eq!(
        contact(&ctx, "ada@example.com").await.first_name.as_deref(),
        Some("Augusta")
    );
}

async fn empty_values_never_erase(ctx: Ctx) {
    let mut crm = importer(&ctx.store, "crm", "customers").await;
    crm.fields = ctx
        .store
        .ensure_custom_fields(&[CustomFieldDef {
            tag: "%CRM_NOTES%".into(),
            label: "Notes".into(),
            field_type: CustomFieldType::Text,
            service: "crm".into(),
        }])
        .await
        .unwrap();
    let first = rec("ada@example.com")
        .first("Ada")
        .phone("+44 1")
        .org("Engines")
        .custom(0, FieldValue::Text("likes numbers".into()));
    crm.write(&ctx.store, &[first]).await.unwrap();

    let mut empty = rec("ada@example.com").last("Lovelace").phone("");
    empty.first_name = None;
    let empty = empty.custom(0, FieldValue::Text(String::new()));
    let outcome = crm.write(&ctx.store, &[empty]).await.unwrap();
    assert_eq!(outcome.updated, 1);
    let ada = contact(&ctx, "ada@example.com").await;
    assert_eq!(ada.first_name.as_deref(), Some("Ada"));
    assert_eq!(ada.phone.as_deref(), Some("+44 1"));
    assert_eq!(ada.organization.as_deref(), Some("Engines"));
    assert_eq!(ada.last_name.as_deref(), Some("Lovelace"));
    assert_eq!(ada.fields[0].value, "likes numbers");

    // A non-empty value overwrites.
    crm.write(
        &ctx.store,
        &[rec("ada@example.com")
            .first("Augusta")
            .custom(0, FieldValue::Text("poetical science".into()))],
    )
    .await
    .unwrap();
    let ada = contact(&ctx, "ada@example.com").await;
    assert_eq!(ada.first_name.as_deref(), Some("Augusta"));
    assert_eq!(ada.fields[0].value, "poetical science");
}

async fn imports_add_members_but_never_reactivate(ctx: Ctx) {
    let crm = importer(&ctx.store, "crm", "customers").await;
    let outcome = crm
        .write(&ctx.store, &[rec("ada@example.com").first("Ada")])
        .await
        .unwrap();
    assert_eq!(outcome.memberships_added, 1);
    let ada = contact(&ctx, "ada@example.com").await;
    assert_eq!(
        membership(&ada, "customers"),
        Some(MembershipStatus::Active)
    );

    // A person unsubscribes her from the list; the next import changes her name but
    // leaves the membership unsubscribed.
    ctx.store
        .unsubscribe(
            "ada@example.com",
            UnsubscribeScope::List("customers".into()),
        )
        .await
        .unwrap();
    let outcome = crm
        .write(&ctx.store, &[rec("ada@example.com").first("Augusta")])
        .await
        .unwrap();
    assert_eq!((outcome.updated, outcome.memberships_added), (1, 0));
    let ada = contact(&ctx, "ada@example.com").await;
    assert_eq!(ada.first_name.as_deref(), Some("Augusta"));
    assert_eq!(
        membership(&ada, "customers"),
        Some(MembershipStatus::Unsubscribed)
    );
}

async fn bounced_or_globally_unsubscribed_never_made_active(ctx: Ctx) {
    let crm = importer(&ctx.store, "crm", "customers").await;
    crm.write(
        &ctx.store,
        &[rec("bounce@example.com"), rec("gone@example.com")],
    )
    .await
    .unwrap();
    ctx.store.bounce("bounce@example.com").await.unwrap();
    ctx.store
        .unsubscribe("gone@example.com", UnsubscribeScope::All)
        .await
        .unwrap();

    let shop = importer(&ctx.store, "shop", "buyers").await;
    let outcome = shop
        .write(
            &ctx.store,
            &[
                rec("bounce@example.com").first("B"),
                rec("gone@example.com").first("G"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(outcome.memberships_added, 0);
    for (email, status) in [
        ("bounce@example.com", ContactStatus::Bounced),
        ("gone@example.com", ContactStatus::Unsubscribed),
    ] {
        let view = contact(&ctx, email).await;
        assert_eq!(view.status, status, "{email}");
        assert_eq!(membership(&view, "buyers"), None, "{email}");
        // The import changed the name but never lifted the status.
        assert!(view.first_name.is_some());
    }
}

async fn service_statuses_map_to_list_and_contact(ctx: Ctx) {
    let crm = importer(&ctx.store, "crm", "customers").await;
    let shop = importer(&ctx.store, "shop", "buyers").await;
    shop.write(
        &ctx.store,
        &[rec("ada@example.com"), rec("bob@example.com")],
    )
    .await
    .unwrap();
    crm.write(&ctx.store, &[rec("ada@example.com")])
        .await
        .unwrap();

    // "unsubscribed" at the CRM: unsubscribed from the CRM importer's list only.
    let outcome = crm
        .write(
            &ctx.store,
            &[
                rec("ada@example.com").status(SubscriptionMeaning::Unsubscribed),
                rec("new@example.com").status(SubscriptionMeaning::Unsubscribed),
            ],
        )
        .await
        .unwrap();
    assert_eq!(outcome.memberships_added, 0);
    let ada = contact(&ctx, "ada@example.com").await;
    assert_eq!(ada.status, ContactStatus::Normal);
    assert_eq!(
        membership(&ada, "customers"),
        Some(MembershipStatus::Unsubscribed)
    );
    assert_eq!(membership(&ada, "buyers"), Some(MembershipStatus::Active));
    let new = contact(&ctx, "new@example.com").await;
    assert_eq!(
        membership(&new, "customers"),
        Some(MembershipStatus::Unsubscribed)
    );

    // "bounced" at the CRM: bounced everywhere, no new active membership.
    let outcome = crm
        .write(
            &ctx.store,
            &[
                rec("bob@example.com").status(SubscriptionMeaning::Bounced),
                rec("fresh@example.com").status(SubscriptionMeaning::Bounced),
            ],
        )
        .await
        .unwrap();
    assert_eq!(outcome.memberships_added, 0);
    for email in ["bob@example.com", "fresh@example.com"] {
        let view = contact(&ctx, email).await;
        assert_eq!(view.status, ContactStatus::Bounced, "{email}");
        assert_eq!(membership(&view, "customers"), None, "{email}");
    }
    // A later import without the status does not lift it.
    crm.write(&ctx.store, &[rec("bob@example.com").first("Bob")])
        .await
        .unwrap();
    let bob = contact(&ctx, "bob@example.com").await;
    assert_eq!(bob.status, ContactStatus::Bounced);
    assert_eq!(membership(&bob, "customers"), None);
}

/// "Not mailable now" (issue 18): a pending membership follows the service both ways
/// (pending -> active when it says subscribed, active -> pending when it says pending
/// again); an unsubscribed membership and a bounced contact never become pending or
/// active; a connector that maps no status changes no existing membership.
async fn pending_memberships_follow_the_service_but_never_lift_an_opt_out(ctx: Ctx) {
    use SubscriptionMeaning::{Bounced, Pending, Subscribed, Unsubscribed};
    let crm = importer(&ctx.store, "crm", "news").await;
    let outcome = crm
        .write(
            &ctx.store,
            &[
                rec("ada@example.com").status(Pending),
                rec("bob@example.com").status(Subscribed),
                rec("cy@example.com").status(Unsubscribed),
                rec("di@example.com").status(Bounced),
            ],
        )
        .await
        .unwrap();
    assert_eq!(outcome.memberships_added, 1, "only bob is mailable");
    let states = |view: &ContactView| (view.status, membership(view, "news"));
    use ContactStatus::{Bounced as B, Normal as N};
    use MembershipStatus::{Active as A, Pending as P, Unsubscribed as U};
    assert_eq!(
        states(&contact(&ctx, "ada@example.com").await),
        (N, Some(P))
    );
    assert_eq!(
        states(&contact(&ctx, "bob@example.com").await),
        (N, Some(A))
    );
    assert_eq!(states(&contact(&ctx, "cy@example.com").await), (N, Some(U)));
    assert_eq!(states(&contact(&ctx, "di@example.com").await), (B, None));

    // Ada confirms; Bob goes back to pending; Cy and Di say subscribed, which lifts
    // neither the unsubscribe nor the bounce.
    let outcome = crm
        .write(
            &ctx.store,
            &[
                rec("ada@example.com").first("Ada").status(Subscribed),
                rec("bob@example.com").first("Bob").status(Pending),
                rec("cy@example.com").first("Cy").status(Subscribed),
                rec("di@example.com").first("Di").status(Subscribed),
            ],
        )
        .await
        .unwrap();
    assert_eq!(outcome.memberships_added, 1, "ada");
    let ada = contact(&ctx, "ada@example.com").await;
    assert_eq!(states(&ada), (N, Some(A)));
    assert!(ada.lists[0].subscribed_at.is_some());
    assert_eq!(
        states(&contact(&ctx, "bob@example.com").await),
        (N, Some(P))
    );
    assert_eq!(states(&contact(&ctx, "cy@example.com").await), (N, Some(U)));
    assert_eq!(states(&contact(&ctx, "di@example.com").await), (B, None));

    // A pending membership with no status from the service stays pending; a status
    // change alone (nothing else of the contact changed) is written and counted.
    crm.write(&ctx.store, &[rec("bob@example.com").last("B")])
        .await
        .unwrap();
    assert_eq!(
        states(&contact(&ctx, "bob@example.com").await),
        (N, Some(P))
    );
    let outcome = crm
        .write(
            &ctx.store,
            &[rec("bob@example.com").last("B").status(Subscribed)],
        )
        .await
        .unwrap();
    assert_eq!((outcome.updated, outcome.unchanged), (1, 0));
    assert_eq!(
        states(&contact(&ctx, "bob@example.com").await),
        (N, Some(A))
    );

    // One event per membership change, never notifying.
    let events = ctx
        .count(
            "SELECT COUNT(*) FROM change_events WHERE kind = 'membership_changed'
             AND CAST(changes AS TEXT) LIKE '%pending%'",
        )
        .await;
    assert_eq!(
        events, 4,
        "ada and bob pending, ada active, bob pending again, bob active"
    );
}

async fn tags_reuse_and_lock_a_person_made_field(ctx: Ctx) {
    let tag = personalization_tag("batchbook", "Company (HQ)");
    assert_eq!(tag, "%BATCHBOOK_COMPANY_HQ%");
    let made = ctx
        .store
        .create_field("Headquarters", &tag, CustomFieldType::Text)
        .await
        .unwrap();
    assert_eq!(made.origin, FieldOrigin::Person);
    assert!(!made.locked);

    let bindings = ctx
        .store
        .ensure_custom_fields(&[
            CustomFieldDef {
                tag: tag.clone(),
                label: "Company (HQ)".into(),
                field_type: CustomFieldType::Number,
                service: "batchbook".into(),
            },
            CustomFieldDef {
                tag: personalization_tag("batchbook", "Company Affiliations"),
                label: "Company Affiliations".into(),
                field_type: CustomFieldType::List,
                service: "batchbook".into(),
            },
        ])
        .await
        .unwrap();
    assert_eq!(bindings[0].field_id, made.id);
    assert_eq!(bindings[0].stored_type, CustomFieldType::Text);
    assert_eq!(bindings[1].tag, "%BATCHBOOK_COMPANY_AFFILIATIONS%");
    assert_eq!(bindings[1].stored_type, CustomFieldType::List);

    let fields = ctx.store.fields().await.unwrap();
    let reused = fields.iter().find(|f| f.tag == tag).unwrap();
    assert!(reused.locked);
    assert_eq!(reused.origin, FieldOrigin::Person);
    assert_eq!(reused.label, "Headquarters");
    let created = fields
        .iter()
        .find(|f| f.tag == "%BATCHBOOK_COMPANY_AFFILIATIONS%")
        .unwrap();
    assert_eq!(created.origin, FieldOrigin::Import);
    assert_eq!(created.service.as_deref(), Some("batchbook"));
    assert!(created.locked);

    // The label can still change; the tag cannot.
    let renamed = ctx
        .store
        .update_field(
            &tag,
            &FieldChange {
                label: Some("Main office".into()),
                tag: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.label, "Main office");
    let refused = ctx
        .store
        .update_field(
            &tag,
            &FieldChange {
                label: None,
                tag: Some("%BATCHBOOK_HQ%".into()),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::Refused(_)), "{refused}");
    assert!(refused.to_string().contains("locked"), "{refused}");

    // An unlocked person-made field may change its tag.
    ctx.store
        .create_field("Shoe size", "%SHOE_SIZE%", CustomFieldType::Number)
        .await
        .unwrap();
    let moved = ctx
        .store
        .update_field(
            "%SHOE_SIZE%",
            &FieldChange {
                label: None,
                tag: Some("%SIZE_SHOE%".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(moved.tag, "%SIZE_SHOE%");
    let duplicate = ctx
        .store
        .create_field("Again", "%SIZE_SHOE%", CustomFieldType::Text)
        .await
        .unwrap_err();
    assert!(duplicate.to_string().contains("exists"), "{duplicate}");
}

async fn values_convert_to_the_existing_type_or_count_failures(ctx: Ctx) {
    let tag = personalization_tag("crm", "Age");
    ctx.store
        .create_field("Age", &tag, CustomFieldType::Number)
        .await
        .unwrap();
    let mut crm = importer(&ctx.store, "crm", "customers").await;
    crm.fields = ctx
        .store
        .ensure_custom_fields(&[CustomFieldDef {
            tag: tag.clone(),
            label: "Age".into(),
            field_type: CustomFieldType::Text,
            service: "crm".into(),
        }])
        .await
        .unwrap();
    assert_eq!(crm.fields[0].stored_type, CustomFieldType::Number);
    let outcome = crm
        .write(
            &ctx.store,
            &[
                rec("ada@example.com").custom(0, FieldValue::Text(" 36 ".into())),
                rec("bob@example.com").custom(0, FieldValue::Text("thirty".into())),
            ],
        )
        .await
        .unwrap();
    assert_eq!(outcome.field_failures, 1);
    assert_eq!(outcome.created, 2);
    assert_eq!(contact(&ctx, "ada@example.com").await.fields[0].value, "36");
    assert!(contact(&ctx, "bob@example.com").await.fields.is_empty());
}

async fn field_values_remember_importer_and_run(ctx: Ctx) {
    let def = CustomFieldDef {
        tag: "%SHARED_TIER%".into(),
        label: "Tier".into(),
        field_type: CustomFieldType::Text,
        service: "shared".into(),
    };
    let mut crm = importer(&ctx.store, "crm", "customers").await;
    crm.fields = ctx
        .store
        .ensure_custom_fields(std::slice::from_ref(&def))
        .await
        .unwrap();
    crm.write(
        &ctx.store,
        &[rec("ada@example.com").custom(0, FieldValue::Text("gold".into()))],
    )
    .await
    .unwrap();
    let value = &contact(&ctx, "ada@example.com").await.fields[0];
    assert_eq!(value.importer.as_deref(), Some("crm"));
    assert_eq!(value.run_id, Some(crm.run_id));
    assert_eq!(value.tag, "%SHARED_TIER%");

    let mut shop = importer(&ctx.store, "shop", "buyers").await;
    shop.fields = ctx.store.ensure_custom_fields(&[def]).await.unwrap();
    shop.write(
        &ctx.store,
        &[rec("ada@example.com").custom(0, FieldValue::Text("platinum".into()))],
    )
    .await
    .unwrap();
    let ada = contact(&ctx, "ada@example.com").await;
    assert_eq!(ada.fields[0].value, "platinum");
    assert_eq!(ada.fields[0].importer.as_deref(), Some("shop"));
    assert_eq!(ada.fields[0].run_id, Some(shop.run_id));
    let sources: Vec<&str> = ada.sources.iter().map(|s| s.importer.as_str()).collect();
    assert_eq!(sources, ["crm", "shop"]);
}

async fn unchanged_hash_is_counted_and_nothing_rewritten(ctx: Ctx) {
    let crm = importer(&ctx.store, "crm", "customers").await;
    let page = [
        rec("ada@example.com").first("Ada").external("1"),
        rec("bob@example.com").first("Bob").external("2"),
    ];
    crm.write(&ctx.store, &page).await.unwrap();
    let before = contact(&ctx, "ada@example.com").await;
    let events = ctx.store.change_events(0, 1000).await.unwrap().len();
    let outcome = crm.write(&ctx.store, &page).await.unwrap();
    assert_eq!(outcome.unchanged, 2);
    assert_eq!((outcome.created, outcome.updated), (0, 0));
    let after = contact(&ctx, "ada@example.com").await;
    assert_eq!(after, before, "nothing rewritten, not even times");
    assert_eq!(
        ctx.store.change_events(0, 1000).await.unwrap().len(),
        events
    );
    assert_eq!(after.sources[0].external_id.as_deref(), Some("1"));
    assert_eq!(after.sources[0].content_hash, page[0].content_hash);
}

async fn deleted_at_service_is_recorded_on_the_source(ctx: Ctx) {
    let crm = importer(&ctx.store, "crm", "customers").await;
    crm.write(
        &ctx.store,
        &[
            rec("ada@example.com").external("41"),
            rec("bob@example.com").external("42"),
        ],
    )
    .await
    .unwrap();
    let outcome = crm
        .write_with(
            &ctx.store,
            &[],
            &["42".to_string(), "999".to_string()],
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(outcome.deleted, 1);
    let bob = contact(&ctx, "bob@example.com").await;
    assert!(bob.sources[0].deleted_at.is_some());
    assert_eq!(bob.status, ContactStatus::Normal, "the contact is kept");
    assert!(
        contact(&ctx, "ada@example.com").await.sources[0]
            .deleted_at
            .is_none()
    );
    // Reappearing at the service clears the mark, even with the same content.
    crm.write(&ctx.store, &[rec("bob@example.com").external("42")])
        .await
        .unwrap();
    assert!(
        contact(&ctx, "bob@example.com").await.sources[0]
            .deleted_at
            .is_none()
    );
}

async fn a_deletion_at_the_source_removes_the_membership_until_the_record_returns(ctx: Ctx) {
    let crm = importer(&ctx.store, "crm", "customers").await;
    let shop = importer(&ctx.store, "shop", "customers").await;
    crm.write(
        &ctx.store,
        &[
            rec("ada@example.com").external("41"),
            rec("bob@example.com").external("42"),
            rec("cy@example.com").external("43"),
            rec("dee@example.com").external("44"),
        ],
    )
    .await
    .unwrap();
    // Cy is on the same list through another importer too.
    shop.write(&ctx.store, &[rec("cy@example.com").external("s1")])
        .await
        .unwrap();
    let events_before = ctx.store.change_events(0, 1000).await.unwrap().len();
    let ids: Vec<String> = ["42", "43", "44"].map(String::from).to_vec();
    let outcome = crm
        .write_with(&ctx.store, &[], &ids, &Default::default())
        .await
        .unwrap();
    assert_eq!(outcome.deleted, 3);
    let bob = contact(&ctx, "bob@example.com").await;
    assert_eq!(
        membership(&bob, "customers"),
        Some(MembershipStatus::Removed)
    );
    assert_eq!(bob.status, ContactStatus::Normal, "the contact is kept");
    assert_eq!(
        membership(&contact(&ctx, "cy@example.com").await, "customers"),
        Some(MembershipStatus::Active),
        "another importer still gives Cy to the list"
    );
    assert_eq!(
        membership(&contact(&ctx, "ada@example.com").await, "customers"),
        Some(MembershipStatus::Active)
    );
    let events = ctx.store.change_events(0, 1000).await.unwrap();
    let new: Vec<_> = events[events_before..].iter().collect();
    assert_eq!(new.len(), 2, "Bob and Dee: {new:?}");
    let event = new.iter().find(|e| e.email == "bob@example.com").unwrap();
    assert_eq!(event.kind, ChangeKind::MembershipChanged);
    assert!(!event.notify);
    assert_eq!(event.importer.as_deref(), Some("crm"));
    assert_eq!(
        event.changes["status"],
        serde_json::json!({"old": "active", "new": "removed"})
    );
    assert_eq!(event.changes["reason"]["new"], "deleted at the service");

    // Bob comes back: active again. Dee bounced meanwhile: she stays removed.
    ctx.store.bounce("dee@example.com").await.unwrap();
    let outcome = crm
        .write(
            &ctx.store,
            &[
                rec("bob@example.com").external("42"),
                rec("dee@example.com").external("44"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(outcome.updated, 2);
    assert_eq!(
        membership(&contact(&ctx, "bob@example.com").await, "customers"),
        Some(MembershipStatus::Active)
    );
    assert_eq!(
        membership(&contact(&ctx, "dee@example.com").await, "customers"),
        Some(MembershipStatus::Removed)
    );
    // A person's unsubscribe of a removed membership is final.
    crm.write_with(&ctx.store, &[], &["42".to_string()], &Default::default())
        .await
        .unwrap();
    ctx.store
        .unsubscribe(
            "bob@example.com",
            UnsubscribeScope::List("customers".into()),
        )
        .await
        .unwrap();
    crm.write(
        &ctx.store,
        &[rec("bob@example.com").external("42").first("Bob")],
    )
    .await
    .unwrap();
    assert_eq!(
        membership(&contact(&ctx, "bob@example.com").await, "customers"),
        Some(MembershipStatus::Unsubscribed)
    );
}

async fn a_complete_full_pass_removes_what_it_did_not_see(ctx: Ctx) {
    use tributary::model::{Checkpoint, PageCounts, PageWrite};
    let crm = importer(&ctx.store, "crm", "customers").await;
    let write = |contacts: Vec<tributary::model::ContactRecord>,
                 seen: Vec<String>,
                 pass: chrono::DateTime<chrono::Utc>,
                 sweep: bool| {
        let store = ctx.store.clone();
        let (id, run_id, token, list_id) = (
            crm.id.clone(),
            crm.run_id,
            crm.lease.fencing_token,
            crm.list_id,
        );
        async move {
            store
                .write_page(PageWrite {
                    importer: &id,
                    run_id,
                    fencing_token: token,
                    list_id,
                    fields: &[],
                    contacts: &contacts,
                    deleted_external_ids: &[],
                    seen_pass: Some(pass),
                    seen_external_ids: &seen,
                    sweep,
                    checkpoint: &Checkpoint::default(),
                    counts: PageCounts::default(),
                })
                .await
                .unwrap()
        }
    };
    let first: chrono::DateTime<chrono::Utc> = "2026-01-01T00:00:00.123456Z".parse().unwrap();
    let people = |ids: &[u32]| -> Vec<_> {
        ids.iter()
            .map(|i| rec(&format!("p{i}@example.com")).external(&i.to_string()))
            .collect()
    };
    write(people(&[1, 2]), vec![], first, false).await;
    let outcome = write(people(&[3, 4]), vec![], first, true).await;
    assert_eq!(outcome.gone, 0);
    // The next full pass: 1 and 2 again (2 unchanged, not rewritten), 3 returned but
    // skipped by the engine (seen by its id), 4 not returned at all.
    let second: chrono::DateTime<chrono::Utc> = "2026-01-08T00:00:00.654321Z".parse().unwrap();
    let outcome = write(people(&[1, 2]), vec![], second, false).await;
    assert_eq!(outcome.unchanged, 2);
    // A write that does not complete the pass removes nothing.
    assert_eq!(
        membership(&contact(&ctx, "p4@example.com").await, "customers"),
        Some(MembershipStatus::Active)
    );
    let outcome = write(vec![], vec!["3".into()], second, true).await;
    assert_eq!(outcome.gone, 1);
    for (email, wanted) in [
        ("p1@example.com", MembershipStatus::Active),
        ("p2@example.com", MembershipStatus::Active),
        ("p3@example.com", MembershipStatus::Active),
        ("p4@example.com", MembershipStatus::Removed),
    ] {
        assert_eq!(
            membership(&contact(&ctx, email).await, "customers"),
            Some(wanted),
            "{email}"
        );
    }
    let events = ctx.store.change_events(0, 1000).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.email, "p4@example.com");
    assert_eq!(
        last.changes["reason"]["new"],
        "not returned by a complete full pass"
    );
    let runs = ctx.store.runs("crm", 1).await.unwrap();
    assert_eq!(
        runs[0].counts.deleted, 1,
        "the run counts what the pass found gone"
    );
}

async fn an_email_changed_at_the_source_moves_the_source(ctx: Ctx) {
    let crm = importer(&ctx.store, "crm", "customers").await;
    let shop = importer(&ctx.store, "shop", "customers").await;
    crm.write(
        &ctx.store,
        &[
            rec("ada@example.com").external("41"),
            rec("bob@example.com").external("42"),
        ],
    )
    .await
    .unwrap();
    shop.write(&ctx.store, &[rec("bob@example.com").external("s1")])
        .await
        .unwrap();
    let outcome = crm
        .write(
            &ctx.store,
            &[
                rec("ada@new.example").external("41"),
                rec("robert@example.com").external("42"),
            ],
        )
        .await
        .unwrap();
    assert_eq!((outcome.created, outcome.moved), (2, 2));
    let old = contact(&ctx, "ada@example.com").await;
    assert_eq!(
        membership(&old, "customers"),
        Some(MembershipStatus::Removed)
    );
    assert!(
        old.sources[0].deleted_at.is_some(),
        "the old address's source ended"
    );
    let new = contact(&ctx, "ada@new.example").await;
    assert_eq!(
        membership(&new, "customers"),
        Some(MembershipStatus::Active)
    );
    assert_eq!(new.sources[0].external_id.as_deref(), Some("41"));
    assert_eq!(
        membership(&contact(&ctx, "bob@example.com").await, "customers"),
        Some(MembershipStatus::Active),
        "another importer still gives Bob to the list"
    );
    let events = ctx.store.change_events(0, 1000).await.unwrap();
    let moved = events
        .iter()
        .find(|e| e.kind == ChangeKind::SourceMoved && e.email == "ada@example.com")
        .expect("the move is recorded");
    assert!(!moved.notify);
    assert_eq!(
        moved.changes["email"],
        serde_json::json!({"old": "ada@example.com", "new": "ada@new.example"})
    );
    assert!(events.iter().any(|e| e.email == "ada@example.com"
        && e.kind == ChangeKind::MembershipChanged
        && e.changes["reason"]["new"] == "email changed at the service"));
    // The same page again moves nothing.
    let again = crm
        .write(
            &ctx.store,
            &[
                rec("ada@new.example").external("41"),
                rec("robert@example.com").external("42"),
            ],
        )
        .await
        .unwrap();
    assert_eq!((again.unchanged, again.moved), (2, 0));
    // Back to the old address: the source moves back, and so does the membership.
    let back = crm
        .write(&ctx.store, &[rec("ada@example.com").external("41")])
        .await
        .unwrap();
    assert_eq!(back.moved, 1);
    assert_eq!(
        membership(&contact(&ctx, "ada@example.com").await, "customers"),
        Some(MembershipStatus::Active)
    );
    assert_eq!(
        membership(&contact(&ctx, "ada@new.example").await, "customers"),
        Some(MembershipStatus::Removed)
    );
}

async fn change_events_describe_import_changes_without_notifying(ctx: Ctx) {
    let mut crm = importer(&ctx.store, "crm", "customers").await;
    crm.fields = ctx
        .store
        .ensure_custom_fields(&[CustomFieldDef {
            tag: "%CRM_TIER%".into(),
            label: "Tier".into(),
            field_type: CustomFieldType::Text,
            service: "crm".into(),
        }])
        .await
        .unwrap();
    crm.write(
        &ctx.store,
        &[rec("ada@example.com")
            .first("Ada")
            .custom(0, FieldValue::Text("gold".into()))],
    )
    .await
    .unwrap();
    crm.write(
        &ctx.store,
        &[rec("ada@example.com").first("Ada").last("Lovelace")],
    )
    .await
    .unwrap();
    let events = ctx.store.change_events(0, 100).await.unwrap();
    let kinds: Vec<ChangeKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            ChangeKind::ContactCreated,
            ChangeKind::MembershipChanged,
            ChangeKind::ContactChanged
        ]
    );
    for event in &events {
        assert_eq!(event.origin, tributary::store::ChangeOrigin::Import);
        assert!(!event.notify);
        assert_eq!(event.importer.as_deref(), Some("crm"));
        assert_eq!(event.run_id, Some(crm.run_id));
        assert_eq!(event.email, "ada@example.com");
    }
    // A created contact lists each field with its new value only (there was no old one).
    assert_eq!(
        events[0].changes,
        serde_json::json!({"first_name": {"new": "Ada"}, "%CRM_TIER%": {"new": "gold"}})
    );
    assert_eq!(events[1].list_id, Some(crm.list_id));
    assert_eq!(
        events[1].changes,
        serde_json::json!({"status": {"new": "active"}})
    );
    let changed = events[2].changes.as_object().unwrap();
    assert_eq!(changed.keys().collect::<Vec<_>>(), ["last_name"]);
    assert_eq!(changed["last_name"], serde_json::json!({"new": "Lovelace"}));
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
}

async fn contacts_filter_by_list_and_email(ctx: Ctx) {
    let crm = importer(&ctx.store, "crm", "customers").await;
    let shop = importer(&ctx.store, "shop", "buyers").await;
    crm.write(
        &ctx.store,
        &[rec("ada@example.com"), rec("bob@example.com")],
    )
    .await
    .unwrap();
    shop.write(&ctx.store, &[rec("cy@example.com")])
        .await
        .unwrap();
    let in_list = |list: &str| ContactFilter {
        list: Some(list.to_string()),
        ..ContactFilter::default()
    };
    let emails =
        |views: Vec<ContactView>| -> Vec<String> { views.into_iter().map(|v| v.email).collect() };
    assert_eq!(
        emails(ctx.store.contacts(&in_list("customers")).await.unwrap()),
        ["ada@example.com", "bob@example.com"]
    );
    assert_eq!(
        emails(ctx.store.contacts(&in_list("buyers")).await.unwrap()),
        ["cy@example.com"]
    );
    assert_eq!(
        emails(ctx.store.contacts(&ContactFilter::default()).await.unwrap()).len(),
        3
    );
    let missing = ctx.store.contacts(&in_list("nope")).await.unwrap_err();
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing}");
}

/// Text with tabs, newlines, backslashes and `\N` (what PostgreSQL's `COPY` text format
/// escapes) comes back exactly as written, in contacts, values, sources and events.
async fn awkward_text_round_trips_exactly(ctx: Ctx) {
    let mut crm = importer(&ctx.store, "crm", "customers").await;
    crm.fields = ctx
        .store
        .ensure_custom_fields(&[CustomFieldDef {
            tag: "%CRM_NOTE%".into(),
            label: "Note".into(),
            field_type: CustomFieldType::Text,
            service: "crm".into(),
        }])
        .await
        .unwrap();
    let awkward = "tab\there\nnew line\r\\N back\\slash \\\\ \u{e9}\u{1F600} \"quoted\"";
    let record = rec("ada@example.com")
        .first(awkward)
        .external(awkward)
        .custom(0, FieldValue::Text(awkward.into()));
    assert_eq!(crm.write(&ctx.store, &[record]).await.unwrap().created, 1);
    let ada = contact(&ctx, "ada@example.com").await;
    assert_eq!(ada.first_name.as_deref(), Some(awkward));
    assert_eq!(ada.fields[0].value, awkward);
    assert_eq!(ada.sources[0].external_id.as_deref(), Some(awkward));
    let events = ctx.store.change_events(0, 10).await.unwrap();
    let created = events
        .iter()
        .find(|e| e.kind == ChangeKind::ContactCreated)
        .unwrap();
    assert_eq!(created.changes["first_name"]["new"], awkward);
    assert_eq!(created.changes["%CRM_NOTE%"]["new"], awkward);
    let joined = events
        .iter()
        .find(|e| e.kind == ChangeKind::MembershipChanged)
        .unwrap();
    assert_eq!(joined.list_id, Some(crm.list_id));
    assert!(!joined.notify);
}

async fn a_page_costs_statements_per_batch_never_per_record(ctx: Ctx) {
    let mut crm = importer(&ctx.store, "crm", "customers").await;
    crm.fields = ctx
        .store
        .ensure_custom_fields(&[
            CustomFieldDef {
                tag: "%CRM_TIER%".into(),
                label: "Tier".into(),
                field_type: CustomFieldType::Text,
                service: "crm".into(),
            },
            CustomFieldDef {
                tag: "%CRM_SCORE%".into(),
                label: "Score".into(),
                field_type: CustomFieldType::Number,
                service: "crm".into(),
            },
        ])
        .await
        .unwrap();
    let page = |size: usize, prefix: &str, round: u32| -> Vec<_> {
        (0..size)
            .map(|i| {
                rec(&format!("{prefix}{i}@example.com"))
                    .first(&format!("First {i} {round}"))
                    .last("Last")
                    .external(&format!("{prefix}{i}"))
                    .custom(0, FieldValue::Text(format!("tier {round}")))
                    .custom(1, FieldValue::Number(f64::from(round)))
            })
            .collect()
    };
    let mut costs = Vec::new();
    // 4,000 records (8,000 events) would pass SQLite's bind-parameter limit as one
    // multi-row VALUES: SQLite's statements take 250 rows each.
    for size in [10, 2000, 4000] {
        let prefix = format!("p{size}-");
        let deleted: Vec<String> = (0..size).map(|i| format!("gone-{i}")).collect();
        for round in 0..2 {
            let records = page(size, &prefix, round);
            let before = ctx.store.statements_executed();
            let outcome = crm
                .write_with(&ctx.store, &records, &deleted, &Default::default())
                .await
                .unwrap();
            costs.push(ctx.store.statements_executed() - before);
            if round == 0 {
                assert_eq!(outcome.created, size as u64);
            } else {
                assert_eq!(outcome.updated, size as u64);
            }
        }
    }
    // A small page: at most 18 statements on SQLite (foreign keys switched off and on
    // around the transaction, one check of the page's list and fields instead of per-row
    // checks, new contacts' first id read before a plain INSERT, one look-up of the
    // external ids new to this importer for an email changed at the source); fewer on
    // PostgreSQL.
    assert!(costs[0] <= 18 && costs[1] <= 18, "{costs:?}");
    match ctx.backend {
        // One array per column: the same statements whatever the size.
        Backend::Postgres => {
            assert_eq!(costs[0], costs[2], "creating 10 vs 2000: {costs:?}");
            assert_eq!(costs[1], costs[3], "updating 10 vs 2000: {costs:?}");
            assert_eq!(costs[0], costs[4], "creating 10 vs 4000: {costs:?}");
            assert_eq!(costs[1], costs[5], "updating 10 vs 4000: {costs:?}");
        }
        // One more execution per 250 rows of a table (5 tables, up to 2 rows each per
        // record): 4,000 records cost about a hundred statements, not thousands.
        Backend::Sqlite => {
            for (small, big, size) in [(0, 2, 2000), (1, 3, 2000), (0, 4, 4000), (1, 5, 4000)] {
                let extra = costs[big] - costs[small];
                assert!(
                    extra > 0 && extra <= 7 * (size as u64).div_ceil(250),
                    "{size} records: {costs:?}"
                );
            }
        }
    }
    assert_eq!(ctx.count("SELECT COUNT(*) FROM contacts").await, 6010);
    assert_eq!(ctx.count("SELECT COUNT(*) FROM field_values").await, 12020);
    let events = ctx.store.change_events(0, 100_000).await.unwrap();
    assert_eq!(
        events.len(),
        6010 * 2 + 6010,
        "created + membership + changed"
    );
    let last = events.last().unwrap();
    assert_eq!(last.email, "p4000-3999@example.com");
    assert_eq!(
        last.changes["first_name"],
        serde_json::json!({"old": "First 3999 0", "new": "First 3999 1"})
    );
}

on_both_backends!(
    upsert_by_normalized_email_merges_page_duplicates,
    empty_values_never_erase,
    imports_add_members_but_never_reactivate,
    bounced_or_globally_unsubscribed_never_made_active,
    service_statuses_map_to_list_and_contact,
    pending_memberships_follow_the_service_but_never_lift_an_opt_out,
    tags_reuse_and_lock_a_person_made_field,
    values_convert_to_the_existing_type_or_count_failures,
    field_values_remember_importer_and_run,
    unchanged_hash_is_counted_and_nothing_rewritten,
    deleted_at_service_is_recorded_on_the_source,
    a_deletion_at_the_source_removes_the_membership_until_the_record_returns,
    a_complete_full_pass_removes_what_it_did_not_see,
    an_email_changed_at_the_source_moves_the_source,
    change_events_describe_import_changes_without_notifying,
    contacts_filter_by_list_and_email,
    a_page_costs_statements_per_batch_never_per_record,
    awkward_text_round_trips_exactly,
);
