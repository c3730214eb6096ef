//! The store's protocol over an in-memory object store: what goes up, what
//! comes back, and what from the bucket is refused.

use std::{path::Path, sync::Arc};

use object_store::{
    memory::InMemory, path::Path as ObjectPath, Attribute, Attributes, ObjectStore, ObjectStoreExt,
    PutOptions,
};

use super::{
    names,
    upload::{Job, Shared},
    SharedStore, StoreUrl,
};

const KEY: &str = "h/simple/a/index.html";
const VARIANT: &str = "h/simple/a/index.html#vnd.pypi.simple.v1+json";
const SIDECAR: &str = ".proxlet-meta/h/simple/a/index.html#meta.json";

fn store(objects: &Arc<InMemory>, dir: &Path) -> Arc<SharedStore> {
    let url = StoreUrl::parse("s3://bucket/fleet").unwrap();
    SharedStore::new(objects.clone(), url, dir)
}

fn put_file(dir: &Path, rel: &str, contents: &[u8]) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

async fn object(objects: &InMemory, rel: &str) -> Option<Vec<u8>> {
    let path = ObjectPath::parse(format!("fleet/{rel}")).unwrap();
    let found = objects.get(&path).await.ok()?;
    Some(found.bytes().await.unwrap().to_vec())
}

fn job(body: &str, sidecar: Option<&str>) -> Job {
    Job {
        body: body.into(),
        sidecar: sidecar.map(Into::into),
    }
}

/// Instance A's dir holding the PEP 691 variant of KEY, shared.
async fn shared_by_a(objects: &Arc<InMemory>) -> tempfile::TempDir {
    let a = tempfile::tempdir().unwrap();
    put_file(a.path(), VARIANT, b"{\"files\": []}");
    put_file(a.path(), SIDECAR, b"{\"url\": \"https://h/simple/a/\"}");
    let shared = store(objects, a.path())
        .upload(job(VARIANT, Some(SIDECAR)))
        .await;
    assert_eq!(shared, Some(Shared::Created));
    a
}

#[tokio::test]
async fn what_one_instance_stored_fills_another_ones_empty_dir() {
    let objects = Arc::new(InMemory::new());
    let _a = shared_by_a(&objects).await;
    // The bucket reads like the dir: plain bytes at the same paths.
    assert_eq!(
        object(&objects, VARIANT).await.as_deref(),
        Some(&b"{\"files\": []}"[..])
    );
    assert!(object(&objects, SIDECAR).await.is_some());

    let b = tempfile::tempdir().unwrap();
    assert!(store(&objects, b.path()).fetch(KEY, None).await);
    assert_eq!(
        std::fs::read(b.path().join(VARIANT)).unwrap(),
        b"{\"files\": []}"
    );
    assert_eq!(
        std::fs::read(b.path().join(SIDECAR)).unwrap(),
        b"{\"url\": \"https://h/simple/a/\"}"
    );
    // Nothing else of the key's, no temp file left.
    let names: Vec<_> = std::fs::read_dir(b.path().join("h/simple/a"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[tokio::test]
async fn a_second_filler_of_one_path_never_replaces_the_first() {
    let objects = Arc::new(InMemory::new());
    let _a = shared_by_a(&objects).await;
    let b = tempfile::tempdir().unwrap();
    put_file(b.path(), VARIANT, b"{\"files\": [\"other\"]}");
    put_file(b.path(), SIDECAR, b"{\"url\": \"b\"}");
    let shared = store(&objects, b.path())
        .upload(job(VARIANT, Some(SIDECAR)))
        .await;
    assert_eq!(shared, Some(Shared::Present));
    assert_eq!(
        object(&objects, VARIANT).await.as_deref(),
        Some(&b"{\"files\": []}"[..])
    );
    assert_eq!(
        object(&objects, SIDECAR).await.as_deref(),
        Some(&b"{\"url\": \"https://h/simple/a/\"}"[..]),
        "the sidecar stays the one of the stored body"
    );
}

#[tokio::test]
async fn a_sidecar_that_never_came_is_made_good_by_the_same_bytes_only() {
    let objects = Arc::new(InMemory::new());
    let _a = shared_by_a(&objects).await;
    let sidecar_path = ObjectPath::parse(format!("fleet/{SIDECAR}")).unwrap();
    objects.delete(&sidecar_path).await.unwrap();

    // Other bytes under the same name: no sidecar from them.
    let b = tempfile::tempdir().unwrap();
    put_file(b.path(), VARIANT, b"{\"files\": [\"other\"]}");
    put_file(b.path(), SIDECAR, b"{\"url\": \"b\"}");
    store(&objects, b.path())
        .upload(job(VARIANT, Some(SIDECAR)))
        .await;
    assert!(object(&objects, SIDECAR).await.is_none());
    // A body announcing a sidecar that is not there is no hit.
    let empty = tempfile::tempdir().unwrap();
    assert!(!store(&objects, empty.path()).fetch(KEY, None).await);

    let c = tempfile::tempdir().unwrap();
    put_file(c.path(), VARIANT, b"{\"files\": []}");
    put_file(c.path(), SIDECAR, b"{\"url\": \"c\"}");
    store(&objects, c.path())
        .upload(job(VARIANT, Some(SIDECAR)))
        .await;
    assert_eq!(
        object(&objects, SIDECAR).await.as_deref(),
        Some(&b"{\"url\": \"c\"}"[..])
    );
    assert!(store(&objects, empty.path()).fetch(KEY, None).await);
}

#[tokio::test]
async fn large_bodies_go_up_in_parts_and_come_back_whole() {
    let objects = Arc::new(InMemory::new());
    let a = tempfile::tempdir().unwrap();
    let wheel = "h/packages/big-1.0-py3-none-any.whl";
    let bytes: Vec<u8> = (0..(super::upload::SINGLE_PUT_MAX + 12345))
        .map(|i| (i % 251) as u8)
        .collect();
    put_file(a.path(), wheel, &bytes);
    let shared = store(&objects, a.path()).upload(job(wheel, None)).await;
    assert_eq!(shared, Some(Shared::Created));
    let b = tempfile::tempdir().unwrap();
    assert!(store(&objects, b.path()).fetch(wheel, None).await);
    assert!(std::fs::read(b.path().join(wheel)).unwrap() == bytes);
    // Uploaded again: it is there already.
    assert_eq!(
        store(&objects, a.path()).upload(job(wheel, None)).await,
        Some(Shared::Present)
    );
}

#[tokio::test]
async fn what_is_on_disk_is_never_replaced_from_the_store() {
    let objects = Arc::new(InMemory::new());
    let _a = shared_by_a(&objects).await;
    // A stale copy with its sidecar (to revalidate), or a sidecar whose
    // file was deleted to force a fetch: the origin's business.
    let b = tempfile::tempdir().unwrap();
    put_file(b.path(), SIDECAR, b"mine");
    assert!(!store(&objects, b.path()).fetch(KEY, None).await);
    assert_eq!(std::fs::read(b.path().join(SIDECAR)).unwrap(), b"mine");
    assert!(!b.path().join(VARIANT).exists());
}

/// Writes a sidecar object for KEY naming `body`, with `sha256`.
async fn planted_sidecar(objects: &InMemory, body: &str, sha256: Option<&str>) {
    let mut attributes = Attributes::new();
    attributes.insert(
        Attribute::Metadata(names::BODY.into()),
        body.to_owned().into(),
    );
    if let Some(sha256) = sha256 {
        attributes.insert(
            Attribute::Metadata(names::SHA256.into()),
            sha256.to_owned().into(),
        );
    }
    let path = ObjectPath::parse(format!("fleet/{SIDECAR}")).unwrap();
    let options = PutOptions {
        attributes,
        ..PutOptions::default()
    };
    objects
        .put_opts(&path, b"{}".to_vec().into(), options)
        .await
        .unwrap();
}

#[tokio::test]
async fn names_from_the_bucket_cannot_reach_beyond_the_key() {
    let objects = Arc::new(InMemory::new());
    let outside = ObjectPath::parse("fleet/h/other/secret").unwrap();
    objects.put(&outside, b"x".to_vec().into()).await.unwrap();
    let b = tempfile::tempdir().unwrap();
    for body in [
        "h/other/secret",
        "../../../tmp/x",
        "/etc/passwd",
        ".proxlet-meta/x",
    ] {
        planted_sidecar(&objects, body, None).await;
        assert!(!store(&objects, b.path()).fetch(KEY, None).await, "{body}");
    }
    // Bytes that are not the ones the sidecar describes: nothing is left.
    let variant = ObjectPath::parse(format!("fleet/{VARIANT}")).unwrap();
    let mut attributes = Attributes::new();
    let sha = "0".repeat(64);
    attributes.insert(
        Attribute::Metadata(names::SHA256.into()),
        sha.clone().into(),
    );
    let options = PutOptions {
        attributes,
        ..PutOptions::default()
    };
    objects
        .put_opts(&variant, b"tampered".to_vec().into(), options)
        .await
        .unwrap();
    planted_sidecar(&objects, VARIANT, Some(&sha)).await;
    assert!(!store(&objects, b.path()).fetch(KEY, None).await);
    let left: Vec<_> = walk(b.path());
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn nothing_is_written_through_a_symlink_in_the_cache_dir() {
    let objects = Arc::new(InMemory::new());
    let _a = shared_by_a(&objects).await;
    let outside = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), b.path().join("h")).unwrap();
    assert!(!store(&objects, b.path()).fetch(KEY, None).await);
    std::fs::remove_file(b.path().join("h")).unwrap();
    std::fs::create_dir_all(b.path().join(".proxlet-meta")).unwrap();
    std::os::unix::fs::symlink(outside.path(), b.path().join(".proxlet-meta/h")).unwrap();
    assert!(!store(&objects, b.path()).fetch(KEY, None).await);
    assert!(walk(outside.path()).is_empty());
}

/// Every file under `dir`, relative.
fn walk(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(next) = todo.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                files.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    files
}
