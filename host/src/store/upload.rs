//! What the cache stored goes up to the shared store, after the fact and
//! off every flow's path: a bounded queue, a few uploads at a time. A body
//! is created only if absent (`PutMode::Create`; multipart above
//! `SINGLE_PUT_MAX`, after a check), so two instances filling one key never
//! mix their bytes; its sidecar follows, naming the body and its SHA-256,
//! and is written only by the instance whose body it describes.

use std::{os::unix::fs::FileExt, sync::Arc};

use bytes::Bytes;
use object_store::{
    path::Path as ObjectPath, Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMode,
    PutMultipartOptions, PutOptions, PutPayload,
};
use sha2::{Digest, Sha256};

use super::{fetch, names, SharedStore};

/// Uploads waiting; more are not shared (logged at DEBUG).
pub const QUEUE: usize = 256;
/// Uploads at once.
pub const AT_ONCE: usize = 4;
/// Bodies up to this size go up in one create-only PUT.
pub const SINGLE_PUT_MAX: u64 = 16 << 20;
/// Part size of larger bodies' multipart uploads.
const PART: u64 = 8 << 20;

/// A stored file to share: cache paths beneath the cache dir.
#[derive(Debug)]
pub struct Job {
    pub body: String,
    pub sidecar: Option<String>,
}

/// What became of a job.
#[derive(Debug, PartialEq, Eq)]
pub enum Shared {
    /// The body (and its sidecar) went up.
    Created,
    /// The store had the body already.
    Present,
    /// The local file went before it could be read.
    Gone,
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("{0}")]
    Store(#[from] object_store::Error),
    #[error("{0}")]
    Local(String),
}

/// Runs the queue: each job in its own task, `AT_ONCE` at a time.
pub async fn run(store: Arc<SharedStore>, mut jobs: tokio::sync::mpsc::Receiver<Job>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
    while let Some(job) = jobs.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let store = store.clone();
        tokio::spawn(async move {
            store.upload(job).await;
            drop(slot);
        });
    }
}

impl SharedStore {
    /// Queues `job`; a full queue drops it (the file stays local).
    pub(super) fn queue(&self, job: Job) {
        if let Err(e) = self.uploads.try_send(job) {
            let job = match e {
                tokio::sync::mpsc::error::TrySendError::Full(job)
                | tokio::sync::mpsc::error::TrySendError::Closed(job) => job,
            };
            tracing::debug!("not sharing {}: the upload queue is full", job.body);
        }
    }

    /// Shares one stored file, logging the outcome.
    pub(super) async fn upload(&self, job: Job) -> Option<Shared> {
        if !self.health.try_use() {
            tracing::debug!("not sharing {}: the store is resting", job.body);
            return None;
        }
        match self.share(&job).await {
            Ok(shared) => {
                self.health.worked();
                tracing::debug!("{}: {shared:?} in the shared cache store", job.body);
                Some(shared)
            }
            Err(UploadError::Store(e)) => {
                self.health.failed(&format!("uploading {}", job.body), &e);
                None
            }
            Err(UploadError::Local(e)) => {
                tracing::warn!("not sharing {}: {e}", job.body);
                None
            }
        }
    }

    async fn share(&self, job: &Job) -> Result<Shared, UploadError> {
        let object = |rel: &str| {
            self.url
                .object(rel)
                .ok_or_else(|| UploadError::Local(format!("{rel:?} cannot be an object name")))
        };
        let body_path = object(&job.body)?;
        let Some(file) = self.open(&job.body)? else {
            return Ok(Shared::Gone);
        };
        let file = Arc::new(file);
        let len = file
            .metadata()
            .map_err(|e| UploadError::Local(e.to_string()))?
            .len();
        // One snapshot: the open file, whatever replaces the name meanwhile.
        let (sha256, whole) = digest(file.clone(), len).await?;
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::Metadata(names::SHA256.into()),
            sha256.clone().into(),
        );
        if let Some(sidecar) = &job.sidecar {
            attributes.insert(
                Attribute::Metadata(names::SIDECAR.into()),
                sidecar.clone().into(),
            );
        }
        let created = match whole {
            Some(bytes) => {
                let options = PutOptions {
                    mode: PutMode::Create,
                    attributes,
                    ..PutOptions::default()
                };
                match self
                    .objects
                    .put_opts(&body_path, bytes.into(), options)
                    .await
                {
                    Ok(_) => true,
                    Err(object_store::Error::AlreadyExists { .. })
                    | Err(object_store::Error::Precondition { .. }) => false,
                    Err(e) => return Err(e.into()),
                }
            }
            // S3 has no create-only multipart upload: look first, and a
            // race at worst puts one whole copy over another.
            None => match self.objects.head(&body_path).await {
                Ok(_) => false,
                Err(object_store::Error::NotFound { .. }) => {
                    self.put_parts(&body_path, &file, len, attributes).await?;
                    true
                }
                Err(e) => return Err(e.into()),
            },
        };
        let Some(sidecar) = &job.sidecar else {
            return Ok(if created {
                Shared::Created
            } else {
                Shared::Present
            });
        };
        let Some(contents) = self.read_sidecar(sidecar)? else {
            return Ok(Shared::Gone);
        };
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::Metadata(names::BODY.into()),
            job.body.clone().into(),
        );
        attributes.insert(
            Attribute::Metadata(names::SHA256.into()),
            sha256.clone().into(),
        );
        let mode = if created {
            PutMode::Overwrite
        } else {
            // Another instance stored the body first and its sidecar
            // follows. One that never came (that instance died in
            // between) is made good from here when the stored bytes are
            // these, byte for byte; never replaced.
            let theirs = self.get(&job.body, true).await?;
            if theirs.and_then(|t| fetch::attribute(&t, names::SHA256)) != Some(sha256) {
                return Ok(Shared::Present);
            }
            PutMode::Create
        };
        let options = PutOptions {
            mode,
            attributes,
            ..PutOptions::default()
        };
        match self
            .objects
            .put_opts(&object(sidecar)?, contents.into(), options)
            .await
        {
            Ok(_) => Ok(if created {
                Shared::Created
            } else {
                Shared::Present
            }),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(Shared::Present),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens cache path `rel` beneath the cache dir: a regular file, or
    /// `None` when it is gone.
    fn open(&self, rel: &str) -> Result<Option<std::fs::File>, UploadError> {
        let at = self
            .at(rel)
            .ok_or_else(|| UploadError::Local(format!("{rel:?} is not a cache path")))?;
        let file = match at.open_read() {
            Ok(file) => file,
            Err(crate::proxy::grant::GrantError::Io(_, e))
                if e.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None)
            }
            Err(e) => return Err(UploadError::Local(e.to_string())),
        };
        match file.metadata() {
            Ok(meta) if meta.is_file() => Ok(Some(file)),
            Ok(_) => Err(UploadError::Local(format!("{rel} is not a regular file"))),
            Err(e) => Err(UploadError::Local(e.to_string())),
        }
    }

    fn read_sidecar(&self, rel: &str) -> Result<Option<Bytes>, UploadError> {
        let Some(file) = self.open(rel)? else {
            return Ok(None);
        };
        let local = |e: std::io::Error| UploadError::Local(format!("{rel}: {e}"));
        let len = file.metadata().map_err(local)?.len();
        if len > fetch::SIDECAR_MAX {
            return Err(UploadError::Local(format!(
                "{rel}: the sidecar is {len} bytes"
            )));
        }
        let mut contents = vec![0; len as usize];
        file.read_exact_at(&mut contents, 0).map_err(local)?;
        Ok(Some(contents.into()))
    }

    async fn put_parts(
        &self,
        path: &ObjectPath,
        file: &Arc<std::fs::File>,
        len: u64,
        attributes: Attributes,
    ) -> Result<(), UploadError> {
        let options = PutMultipartOptions {
            attributes,
            ..PutMultipartOptions::default()
        };
        let mut upload = self.objects.put_multipart_opts(path, options).await?;
        let mut offset = 0;
        let sent: Result<(), UploadError> = async {
            while offset < len {
                let part = read_at(file.clone(), offset, PART.min(len - offset)).await?;
                offset += part.len() as u64;
                upload.put_part(PutPayload::from(part)).await?;
            }
            upload.complete().await?;
            Ok(())
        }
        .await;
        if sent.is_err() {
            let _ = upload.abort().await;
        }
        sent
    }
}

/// The hex SHA-256 of the first `len` bytes of `file` and, when it is small
/// enough for one PUT, those bytes.
async fn digest(
    file: Arc<std::fs::File>,
    len: u64,
) -> Result<(String, Option<Bytes>), UploadError> {
    let local = |e: std::io::Error| UploadError::Local(e.to_string());
    tokio::task::spawn_blocking(move || {
        let mut hash = Sha256::new();
        if len <= SINGLE_PUT_MAX {
            let mut bytes = vec![0; len as usize];
            file.read_exact_at(&mut bytes, 0).map_err(local)?;
            hash.update(&bytes);
            return Ok((fetch::hex(&hash.finalize()), Some(bytes.into())));
        }
        let mut buf = vec![0; PART as usize];
        let mut offset = 0;
        while offset < len {
            let n = PART.min(len - offset) as usize;
            file.read_exact_at(&mut buf[..n], offset).map_err(local)?;
            hash.update(&buf[..n]);
            offset += n as u64;
        }
        Ok((fetch::hex(&hash.finalize()), None))
    })
    .await
    .map_err(|e| UploadError::Local(e.to_string()))?
}

async fn read_at(file: Arc<std::fs::File>, offset: u64, len: u64) -> Result<Bytes, UploadError> {
    tokio::task::spawn_blocking(move || {
        let mut bytes = vec![0; len as usize];
        file.read_exact_at(&mut bytes, offset)?;
        Ok::<_, std::io::Error>(Bytes::from(bytes))
    })
    .await
    .map_err(|e| UploadError::Local(e.to_string()))?
    .map_err(|e| UploadError::Local(e.to_string()))
}
