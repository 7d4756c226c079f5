//! How many entries of *other* backends change owner when one backend goes or comes: the
//! measure behind Maglev's "minimal disruption" (see the module documentation's table).

use super::{build_table, HashSeed, MaglevBackend, MaglevError};
use crate::model::L3n4Addr;

/// The address owning each slot, comparable between tables built from different lists.
fn owners(table: &[u32], backends: &[MaglevBackend]) -> Vec<L3n4Addr> {
    table.iter().map(|&i| backends[i as usize].addr).collect()
}

/// Entries that belonged to a surviving backend and belong to another after removing
/// `backends[removed]`.
pub fn moved_on_removal(
    table_size: u32,
    seed: &HashSeed,
    backends: &[MaglevBackend],
    removed: usize,
) -> Result<usize, MaglevError> {
    let before = owners(&build_table(table_size, seed, backends)?, backends);
    let mut rest = backends.to_vec();
    let gone = rest.remove(removed).addr;
    let after = owners(&build_table(table_size, seed, &rest)?, &rest);
    Ok(before
        .iter()
        .zip(&after)
        .filter(|(b, a)| **b != gone && b != a)
        .count())
}

/// Entries that change owner on adding `added`, other than those `added` takes.
pub fn moved_on_addition(
    table_size: u32,
    seed: &HashSeed,
    backends: &[MaglevBackend],
    added: MaglevBackend,
) -> Result<usize, MaglevError> {
    let before = owners(&build_table(table_size, seed, backends)?, backends);
    let mut more = backends.to_vec();
    more.push(added);
    let after = owners(&build_table(table_size, seed, &more)?, &more);
    Ok(before
        .iter()
        .zip(&after)
        .filter(|(b, a)| **a != added.addr && b != a)
        .count())
}
