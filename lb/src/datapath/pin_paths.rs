//! Removing what the agent pinned or created under its bpffs directory, for `lbctl cleanup`:
//! something already gone is fine, anything else is an error naming the path.

use std::path::{Path, PathBuf};

use super::DatapathError;

/// Removes `path` with `remove` (`remove_file` for a pin, `remove_dir` for a directory) and
/// records it in `removed`; a path that is not there is skipped.
pub(super) fn remove_if_present(
    path: PathBuf,
    remove: fn(&Path) -> std::io::Result<()>,
    removed: &mut Vec<PathBuf>,
) -> Result<(), DatapathError> {
    match remove(&path) {
        Ok(()) => removed.push(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(DatapathError::pin(&path)(e)),
    }
    Ok(())
}
