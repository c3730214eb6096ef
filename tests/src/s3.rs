//! A real S3-compatible server on loopback for the shared cache store
//! tests: s3s-fs over a temp dir with static credentials, in process on
//! `127.0.0.1:0`, that can be killed (every connection dropped) mid-run.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};

/// The bucket every test store has.
pub const BUCKET: &str = "proxlet-fleet";
const ACCESS_KEY: &str = "proxlet-test";
const SECRET_KEY: &str = "proxlet-test-secret";

pub struct S3Server {
    pub addr: SocketAddr,
    root: tempfile::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
}

impl S3Server {
    /// Serves an empty bucket [`BUCKET`].
    pub fn start() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let mut server = Self {
            addr: "127.0.0.1:0".parse().unwrap(),
            root,
            runtime: None,
        };
        server.serve();
        server
    }

    fn serve(&mut self) {
        let (runtime, listener) = crate::loopback_server(self.addr);
        self.addr = listener.local_addr().unwrap();
        let fs = s3s_fs::FileSystem::new(self.root.path()).unwrap();
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        self.runtime = Some(runtime);
    }

    /// Kills the server: its connections drop, its port refuses.
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    /// The environment a proxlet needs to use this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", format!("http://{}", self.addr)),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// The bytes of object `key`, read from the server's disk.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.bucket_dir().join(key)).ok()
    }

    /// Every object key, sorted.
    pub fn keys(&self) -> Vec<String> {
        let bucket = self.bucket_dir();
        let mut keys = Vec::new();
        let mut todo = vec![bucket.clone()];
        while let Some(dir) = todo.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    todo.push(path);
                } else {
                    keys.push(relative(&path, &bucket));
                }
            }
        }
        keys.sort();
        keys
    }

    fn bucket_dir(&self) -> PathBuf {
        self.root.path().join(BUCKET)
    }
}

fn relative(path: &Path, base: &Path) -> String {
    path.strip_prefix(base).unwrap().display().to_string()
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
