//! `netsim-server tcp|udp|http ADDR IDENTITY`: an identity server as a process of its own, for a
//! server that must run inside a cgroup (`http`: a `200 OK` with the identity line as body). Prints `listening ADDR` once bound, then serves until
//! killed.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use netsim::{BoundSocket, Proto};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (proto, addr, identity) = match args.as_slice() {
        [proto, addr, identity] => {
            let Some(proto) = Proto::from_arg(proto) else {
                return usage(&format!("unknown protocol {proto:?}"));
            };
            match addr.parse::<SocketAddr>() {
                Ok(addr) => (proto, addr, identity),
                Err(e) => return usage(&format!("bad address {addr:?}: {e}")),
            }
        }
        _ => return usage("expected 3 arguments"),
    };
    let socket = match BoundSocket::bind(proto, addr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("netsim-server: bind {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bound = socket.local_addr().unwrap_or(addr);
    let mut stdout = std::io::stdout();
    if writeln!(stdout, "listening {bound}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    socket.serve(identity, &Arc::new(AtomicBool::new(false)));
    ExitCode::SUCCESS
}

fn usage(why: &str) -> ExitCode {
    eprintln!("netsim-server: {why}\nusage: netsim-server tcp|udp|http ADDR IDENTITY");
    ExitCode::from(2)
}
