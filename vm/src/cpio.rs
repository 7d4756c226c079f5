//! A writer of cpio archives in the `newc` format, the one the kernel unpacks as an initramfs.
//! Parent directories are emitted before their entries, since the kernel does not create them.

use std::collections::BTreeSet;
use std::io::{self, Write};

/// An archive being written.
#[derive(Debug)]
pub struct Cpio<W: Write> {
    out: W,
    ino: u32,
    dirs: BTreeSet<String>,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

impl<W: Write> Cpio<W> {
    /// An archive written to `out`.
    pub fn new(out: W) -> Self {
        Cpio {
            out,
            ino: 1,
            dirs: BTreeSet::new(),
        }
    }

    /// A directory (and its parents), once.
    pub fn dir(&mut self, path: &str) -> io::Result<()> {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return Ok(());
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.dirs.insert(path.to_owned());
        self.entry(path, S_IFDIR | 0o755, &[])
    }

    /// A regular file with `mode`'s permission bits.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.parents(path)?;
        self.entry(
            path.trim_start_matches('/'),
            S_IFREG | (mode & 0o7777),
            data,
        )
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.parents(path)?;
        self.entry(
            path.trim_start_matches('/'),
            S_IFLNK | 0o777,
            target.as_bytes(),
        )
    }

    /// Writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, &[])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn parents(&mut self, path: &str) -> io::Result<()> {
        match path.trim_matches('/').rsplit_once('/') {
            Some((parent, _)) => self.dir(parent),
            None => Ok(()),
        }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let ino = self.ino;
        self.ino += 1;
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        pad(&mut self.out, header.len() + name.len() + 1)?;
        self.out.write_all(data)?;
        pad(&mut self.out, data.len())
    }
}

fn pad<W: Write>(out: &mut W, len: usize) -> io::Result<()> {
    let n = (4 - len % 4) % 4;
    out.write_all(&[0u8; 3][..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_parents_come_first() {
        let mut c = Cpio::new(Vec::new());
        c.file("/a/b/c.txt", 0o644, b"hello").unwrap();
        let bytes = c.finish().unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let a = text.find("a\0").unwrap();
        let ab = text.find("a/b\0").unwrap();
        let abc = text.find("a/b/c.txt\0").unwrap();
        assert!(a < ab && ab < abc);
        assert_eq!(bytes.len() % 4, 0);
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!\0"));
        // Every header starts on a 4-byte boundary with the newc magic.
        for (at, _) in text.match_indices("070701") {
            assert_eq!(at % 4, 0, "header at {at}");
        }
    }
}
