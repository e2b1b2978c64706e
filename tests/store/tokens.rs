//! Tokens the store keeps are encrypted at rest.

use tributary::store::{Backend, KeySource};

use super::harness::{Ctx, on_both_backends};

const SECRET: &str = "1//0refresh-token-that-must-never-be-stored-in-clear";

async fn tokens_are_encrypted_at_rest(ctx: Ctx) {
    assert_eq!(ctx.store.load_token("oauth:crm").await.unwrap(), None);
    ctx.store.save_token("oauth:crm", SECRET).await.unwrap();
    assert_eq!(
        ctx.store.load_token("oauth:crm").await.unwrap().as_deref(),
        Some(SECRET)
    );
    let stored = ctx.column_bytes("SELECT sealed FROM tokens").await;
    assert_eq!(stored.len(), 1);
    let needle = SECRET.as_bytes();
    assert!(
        !stored[0].windows(needle.len()).any(|w| w == needle),
        "token stored in clear"
    );
    if ctx.backend == Backend::Sqlite {
        // Not in the database file or its WAL either.
        for entry in std::fs::read_dir(ctx.dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(needle.len()).any(|w| w == needle));
        }
    }

    // Rotation overwrites; another key cannot read it, and says so without the value.
    ctx.store
        .save_token("oauth:crm", "rotated-value")
        .await
        .unwrap();
    let mut options = ctx.options();
    options.encryption_key = Some(KeySource::Bytes(b"a different key, long enough".to_vec()));
    let other = ctx.reopen(options).await.unwrap();
    let error = other.load_token("oauth:crm").await.unwrap_err().to_string();
    assert!(error.contains("encryption key differs"), "{error}");
    assert!(!error.contains("rotated-value"));

    ctx.store.delete_token("oauth:crm").await.unwrap();
    assert_eq!(ctx.store.load_token("oauth:crm").await.unwrap(), None);
}

async fn a_key_file_is_read_or_created(ctx: Ctx) {
    let path = ctx.dir.path().join("shared.key");
    let mut options = ctx.options();
    options.encryption_key = Some(KeySource::File(path.clone()));
    let first = ctx.reopen(options.clone()).await.unwrap();
    first.save_token("session:shop", "s3ss10n").await.unwrap();
    assert!(path.exists());
    let second = ctx.reopen(options).await.unwrap();
    assert_eq!(
        second.load_token("session:shop").await.unwrap().as_deref(),
        Some("s3ss10n")
    );
}

on_both_backends!(tokens_are_encrypted_at_rest, a_key_file_is_read_or_created);

#[tokio::test]
async fn postgres_without_a_key_refuses_tokens_with_a_clear_message() {
    super::harness::run(Backend::Postgres, |ctx: Ctx| async move {
        let mut options = ctx.options();
        options.encryption_key = None;
        let keyless = ctx.reopen(options).await.unwrap();
        let error = keyless.save_token("oauth:crm", SECRET).await.unwrap_err();
        assert!(error.to_string().contains("encryption_key"), "{error}");
    })
    .await;
}
