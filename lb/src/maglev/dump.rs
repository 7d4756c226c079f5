//! The JSON form of a table that `lbctl maglev` prints.

use serde::Serialize;

use super::{build_table, HashSeed, MaglevBackend, MaglevError};

/// A Maglev table with the backends it refers to, as printed by
/// `lbctl maglev --table-size M --seed S ADDR…`:
/// `{"table":[index…],"backends":["addr"…]}`.
///
/// `table[k]` is the index into `backends` of the backend owning slot `k`; `backends` lists the
/// backends in the order they were given, as `IP:PORT/PROTO` (the protocol is always shown, since
/// a TCP and a UDP backend on the same IP and port are different backends). With no backend of
/// weight > 0, `table` is empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TableDump {
    /// For every slot, the index into `backends` of its backend.
    pub table: Vec<u32>,
    /// The backends' addresses, in the order given.
    pub backends: Vec<String>,
}

impl TableDump {
    /// Builds the table (see [`build_table`]) and pairs it with the backends' addresses.
    ///
    /// # Errors
    ///
    /// As [`build_table`].
    pub fn build(
        table_size: u32,
        seed: &HashSeed,
        backends: &[MaglevBackend],
    ) -> Result<Self, MaglevError> {
        Ok(TableDump {
            table: build_table(table_size, seed, backends)?,
            backends: backends
                .iter()
                .map(|b| b.addr.display_with_protocol())
                .collect(),
        })
    }

    /// The dump as compact JSON, on one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a TableDump always serializes")
    }
}

/// The compact JSON dump of the table `lbctl maglev` prints (see [`TableDump`]).
///
/// # Errors
///
/// As [`build_table`].
pub fn table_json(
    table_size: u32,
    seed: &HashSeed,
    backends: &[MaglevBackend],
) -> Result<String, MaglevError> {
    Ok(TableDump::build(table_size, seed, backends)?.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_refers_to_backends_in_the_given_order() {
        let backends: Vec<MaglevBackend> = ["10.0.0.2:80@2", "[fd00::1]:53/UDP", "10.0.0.1:80@0"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let seed = HashSeed::default();
        let dump = TableDump::build(251, &seed, &backends).unwrap();
        assert_eq!(
            dump.backends,
            ["10.0.0.2:80/TCP", "[fd00::1]:53/UDP", "10.0.0.1:80/TCP"]
        );
        assert_eq!(dump.table, build_table(251, &seed, &backends).unwrap());
        assert!(dump.table.iter().all(|&i| i == 0 || i == 1));

        let json = table_json(251, &seed, &backends).unwrap();
        assert!(!json.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["backends"][1], "[fd00::1]:53/UDP");
        assert_eq!(value["table"].as_array().unwrap().len(), 251);
        assert_eq!(value["table"][0], dump.table[0]);
    }

    #[test]
    fn dump_passes_errors_through() {
        let backends = ["10.0.0.1:80".parse::<MaglevBackend>().unwrap()];
        let err = table_json(1000, &HashSeed::default(), &backends).unwrap_err();
        assert_eq!(err, MaglevError::InvalidTableSize { size: 1000 });
    }
}
