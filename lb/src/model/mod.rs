//! The service model: plain data with no I/O, shared by translation, the reconciler, the
//! simulator and `lbctl`.

mod addr;

pub use addr::{AddrParseError, IpFamily, L3n4Addr, L4Protocol, IDENTITY_LEN};
