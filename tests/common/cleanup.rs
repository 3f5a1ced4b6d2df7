//! Guards that remove what a test created when they are dropped, also when the test fails.

use std::path::PathBuf;

/// Removes the queue `name` (if it still exists) when dropped.
pub struct RemoveOnDrop(pub String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = shmq::remove(&self.0);
    }
}

/// Removes a path (file, FIFO, socket, symlink or empty directory) when dropped: for the
/// objects a test puts into `/dev/shm` by hand.
pub struct RemovePath(pub PathBuf);

impl Drop for RemovePath {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.0) {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir(&self.0);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&self.0);
            }
            Err(_) => {}
        }
    }
}

/// Serialises, within one test binary, the tests that leave a stale queue for a moment and
/// the ones that call the global `remove_stale` (which would remove it under their feet).
pub fn stale_lock() -> std::sync::MutexGuard<'static, ()> {
    static STALE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    STALE.lock().unwrap_or_else(|e| e.into_inner())
}
