//! `netsim-client tcp|udp-connected|udp-unconnected|http TARGET [COUNT] [--timeout-ms MS]`: COUNT
//! exchanges with an identity server, one JSON line each (`answer`, `local`, `peer`, `error`,
//! `errno`). Failed exchanges are lines with `error` set; the exit code is non-zero only for
//! bad arguments.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use netsim::{exchange, ClientMode};

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut timeout = netsim::CLIENT_TIMEOUT;
    if let Some(i) = args.iter().position(|a| a == "--timeout-ms") {
        match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(ms) => timeout = Duration::from_millis(ms),
            None => return usage("--timeout-ms needs a number of milliseconds"),
        }
        args.drain(i..i + 2);
    }
    let (mode, target, count) = match args.as_slice() {
        [mode, target, rest @ ..] if rest.len() <= 1 => {
            let Some(mode) = ClientMode::from_arg(mode) else {
                return usage(&format!("unknown mode {mode:?}"));
            };
            let Ok(target) = target.parse::<SocketAddr>() else {
                return usage(&format!("bad target {target:?}"));
            };
            let count = match rest.first().map(|c| c.parse::<u32>()) {
                None => 1,
                Some(Ok(c)) => c,
                Some(Err(_)) => return usage("COUNT must be a number"),
            };
            (mode, target, count)
        }
        _ => return usage("expected MODE TARGET [COUNT]"),
    };
    let mut stdout = std::io::stdout().lock();
    for _ in 0..count {
        let reply = exchange(mode, target, timeout);
        let line = serde_json::to_string(&reply).expect("a reply serialises");
        if writeln!(stdout, "{line}").is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn usage(why: &str) -> ExitCode {
    eprintln!(
        "netsim-client: {why}\nusage: netsim-client tcp|udp-connected|udp-unconnected|http TARGET [COUNT] [--timeout-ms MS]"
    );
    ExitCode::from(2)
}
