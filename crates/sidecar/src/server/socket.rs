//! The gRPC listener on a Unix domain socket (`server.grpc_listen: unix:/path`), for an Envoy on
//! the same host or in the same pod: each message skips the loopback TCP stack in both
//! processes, and no port is open to anyone else.
//!
//! The socket file outlives a sidecar that dies without cleaning up (SIGKILL, OOM). Binding
//! removes such a stale file (nothing answers on it), but never one a live process serves on —
//! two sidecars on one path would take each other's traffic — and never anything that is not a
//! socket. A clean stop removes the file again, unless another process has replaced it since.

use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
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

/// The socket's file: removed when dropped, if it is still the one this process bound.
pub struct SocketFile {
    path: PathBuf,
    /// (device, inode) of the socket bound, so a file another process put there is left alone.
    id: (u64, u64),
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
        remove_stale(path)?;
        let listener = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("binding the gRPC socket `{}`", path.display()))?;
        // Set once bound: bind creates the file with the umask's mode, so until this line only
        // the directory's permissions keep others out (keep the socket in a private directory).
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
            .with_context(|| format!("setting the mode of `{}`", path.display()))?;
        let meta = std::fs::symlink_metadata(path).with_context(|| format!("reading `{}`", path.display()))?;
        Ok(UnixSocket {
            listener,
            file: SocketFile {
                path: path.to_path_buf(),
                id: (meta.dev(), meta.ino()),
            },
        })
    }

    /// The accepted connections, for tonic, and the file to keep until serving ends.
    pub fn into_incoming(self) -> (UnixListenerStream, SocketFile) {
        (UnixListenerStream::new(self.listener), self.file)
    }
}

/// Removes a socket file nothing answers on; refuses a live socket and anything else.
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
        Ok(_) => bail!(
            "another process is serving on `{}` (a second sidecar on the same socket?)",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing a stale gRPC socket left by a stopped sidecar");
            std::fs::remove_file(path).with_context(|| format!("removing the stale socket `{}`", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("checking whether `{}` is in use", path.display())),
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if ours && let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove the gRPC socket");
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
    async fn a_file_replaced_by_another_process_is_left_alone() {
        let dir = tempdir("replaced");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("grpc.sock");
        let (incoming, file) = UnixSocket::bind(&path).unwrap().into_incoming();
        drop(incoming);
        // Someone else's socket at the same path (a newer sidecar that found ours stale).
        std::fs::remove_file(&path).unwrap();
        let _theirs = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(file);
        assert!(path.exists(), "the other process's socket must stay");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
