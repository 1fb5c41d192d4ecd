//! The gRPC listener on a Unix domain socket (`server.grpc_listen: unix:/path`), for an Envoy on
//! the same host or in the same pod: each message skips the loopback TCP stack in both
//! processes, and no port is open to anyone else.
//!
//! The socket file outlives a sidecar that dies without cleaning up (SIGKILL, OOM). Ownership is
//! an exclusive lock on `<path>.lock`, held for the life of the process (the kernel drops it
//! when the process dies, however it dies): whoever takes the lock owns the path, so a socket file
//! found then is stale and is replaced; a sidecar that cannot take it refuses to start (two
//! sidecars on one socket would take each other's traffic) — including while the owner drains
//! its last requests with its listener already closed, when a connect alone would call the
//! socket stale. A socket some other program answers on, or a path that is not a socket, is never
//! replaced either. A clean stop removes the socket file; the lock file stays (removing it would
//! let two starting sidecars lock two different files).

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use tokio_stream::wrappers::UnixListenerStream;

/// Who may connect: the sidecar's user and group. Envoy runs as one of them (in a pod: both
/// containers in the `fsGroup` of a shared `emptyDir`); anyone else gets EACCES. The gRPC token,
/// when set, is still required on top.
pub const SOCKET_MODE: u32 = 0o660;

/// A directory the sidecar creates for its socket: group members may reach the socket in it.
const DIR_MODE: u32 = 0o750;

/// A bound Unix socket listener and the file it owns.
pub struct UnixSocket {
    listener: tokio::net::UnixListener,
    file: SocketFile,
}

/// The socket's file and the lock that makes it this process's: the file is removed when this
/// is dropped, the lock released when the process ends.
pub struct SocketFile {
    path: PathBuf,
    _lock: File,
}

/// `<path>.lock`.
fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    p.into()
}

impl UnixSocket {
    /// Binds `path` (creating its directory when missing), replacing a stale socket file.
    /// Must run inside a tokio runtime.
    pub fn bind(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .with_context(|| format!("creating the socket's directory `{}`", dir.display()))?;
        }
        let lock = lock(path)?;
        remove_stale(path)?;
        let listener = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("binding the gRPC socket `{}`", path.display()))?;
        // Set once bound: bind creates the file with the umask's mode, so until this line only
        // the directory's permissions keep others out (keep the socket in a private directory).
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
            .with_context(|| format!("setting the mode of `{}`", path.display()))?;
        Ok(UnixSocket {
            listener,
            file: SocketFile {
                path: path.to_path_buf(),
                _lock: lock,
            },
        })
    }

    /// The accepted connections, for tonic, and the file to keep until serving ends.
    pub fn into_incoming(self) -> (UnixListenerStream, SocketFile) {
        (UnixListenerStream::new(self.listener), self.file)
    }
}

/// Takes `<path>.lock`, or says who has it.
fn lock(path: &Path) -> anyhow::Result<File> {
    let lock_path = lock_path(path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .with_context(|| format!("opening the socket's lock file `{}`", lock_path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another process is serving on `{}` (it holds `{}`: a second sidecar on the same socket?)",
            path.display(),
            lock_path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking `{}`", lock_path.display())),
    }
}

/// With the lock held: removes a socket file nothing answers on; refuses a socket some other
/// program serves on, and anything that is not a socket.
fn remove_stale(path: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading `{}`", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "`{}` exists and is not a socket; refusing to replace it",
            path.display()
        );
    }
    // A Unix connect answers at once: accepted (someone serves), refused (stale), or an error
    // that says the file cannot be ours to replace (permissions).
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => bail!("another process is serving on `{}`", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing a stale gRPC socket left by a stopped sidecar");
            std::fs::remove_file(path).with_context(|| format!("removing the stale socket `{}`", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("checking whether `{}` is in use", path.display())),
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // The lock is still held here: nobody else can have bound this path since.
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove the gRPC socket");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("llmsoup-sock-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[tokio::test]
    async fn binds_with_its_mode_in_a_new_directory_and_removes_the_file_at_the_end() {
        let dir = tempdir("bind");
        let path = dir.join("run").join("grpc.sock");
        let socket = UnixSocket::bind(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, SOCKET_MODE);
        assert_eq!(
            std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777,
            DIR_MODE
        );
        let (_incoming, file) = socket.into_incoming();
        // While served, a second bind is refused rather than stealing the socket.
        let e = format!("{:#}", UnixSocket::bind(&path).err().unwrap());
        assert!(e.contains("another process is serving"), "{e}");
        drop(file);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_other_files_are_refused() {
        let dir = tempdir("stale");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("grpc.sock");
        // A listener that died: its file stays, nothing answers.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let socket = UnixSocket::bind(&path).unwrap();
        let (_incoming, file) = socket.into_incoming();
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        drop(file);

        std::fs::write(&path, "not a socket").unwrap();
        let e = format!("{:#}", UnixSocket::bind(&path).err().unwrap());
        assert!(e.contains("is not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_lock_keeps_a_draining_sidecar_s_path() {
        let dir = tempdir("drain");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("grpc.sock");
        let (incoming, file) = UnixSocket::bind(&path).unwrap().into_incoming();
        // Draining: the listener is closed, so a connect is refused as if the socket were stale,
        // but the process still runs. A second sidecar must not take the path.
        drop(incoming);
        assert!(std::os::unix::net::UnixStream::connect(&path).is_err());
        let e = format!("{:#}", UnixSocket::bind(&path).err().unwrap());
        assert!(
            e.contains("another process is serving") && e.contains("grpc.sock.lock"),
            "{e}"
        );
        assert!(path.exists());
        // Stopped: the file is gone and the next sidecar binds.
        drop(file);
        assert!(!path.exists());
        let (_incoming, _file) = UnixSocket::bind(&path).unwrap().into_incoming();
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_socket_another_program_serves_is_never_taken_over() {
        let dir = tempdir("foreign");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("grpc.sock");
        // Not a sidecar (no lock), but listening.
        let _theirs = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let e = format!("{:#}", UnixSocket::bind(&path).err().unwrap());
        assert!(e.contains("another process is serving"), "{e}");
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
