//! `netsim-client tcp|udp-connected|udp-unconnected|http TARGET [COUNT] [--timeout-ms MS]
//! [--source-port PORT]`: COUNT exchanges with an identity server (the UDP ones from PORT), one
//! JSON line each (`answer`, `local`, `peer`, `error`, `errno`). Failed exchanges are lines with
//! `error` set; the exit code is non-zero only for bad arguments.
//!
//! `netsim-client hold tcp|udp-connected TARGET [--timeout-ms MS]`: opens one socket, prints
//! the first exchange's line, then reads commands on stdin, one a line: `send` makes another
//! exchange on the same socket and prints its line; `close` (or the end of stdin) closes it and
//! exits. A failed connect prints its line and exits.
//!
//! `netsim-client pmtu TARGET SIZE [--timeout-ms MS]`: a path MTU probe with IP packets of SIZE
//! bytes (`netsim::path_mtu`), one JSON line (`mtu`, `emsgsize`, `error`).

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use netsim::{exchange_from, ClientMode, HeldSocket, Reply};

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
    let mut source_port = 0;
    if let Some(i) = args.iter().position(|a| a == "--source-port") {
        match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(port) => source_port = port,
            None => return usage("--source-port needs a port number"),
        }
        args.drain(i..i + 2);
    }
    if args.first().is_some_and(|a| a == "pmtu") {
        let (Some(Ok(target)), Some(Ok(size)), 3) = (
            args.get(1).map(|t| t.parse::<SocketAddr>()),
            args.get(2).map(|s| s.parse::<usize>()),
            args.len(),
        ) else {
            return usage("expected pmtu TARGET SIZE");
        };
        let line = serde_json::to_string(&netsim::path_mtu(target, size, timeout))
            .expect("a probe serialises");
        println!("{line}");
        return ExitCode::SUCCESS;
    }
    let hold = args.first().is_some_and(|a| a == "hold");
    if hold {
        args.remove(0);
    }
    let (mode, target, count) = match args.as_slice() {
        [mode, target, rest @ ..] if rest.len() <= usize::from(!hold) => {
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
        _ => return usage("expected MODE TARGET [COUNT], or hold MODE TARGET"),
    };
    if hold {
        if matches!(mode, ClientMode::UdpUnconnected | ClientMode::Http) {
            return usage("hold takes tcp or udp-connected");
        }
        return run_held(mode, target, timeout);
    }
    let mut stdout = std::io::stdout().lock();
    for _ in 0..count {
        if print(
            &mut stdout,
            &exchange_from(mode, target, timeout, source_port),
        )
        .is_err()
        {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn run_held(mode: ClientMode, target: SocketAddr, timeout: Duration) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    let (socket, reply) = HeldSocket::open(mode, target, timeout);
    if print(&mut stdout, &reply).is_err() {
        return ExitCode::FAILURE;
    }
    let Some(mut socket) = socket else {
        return ExitCode::SUCCESS;
    };
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else {
            return ExitCode::FAILURE;
        };
        match line.trim() {
            "send" => {
                if print(&mut stdout, &socket.exchange()).is_err() {
                    return ExitCode::FAILURE;
                }
            }
            "close" => break,
            other => {
                eprintln!("netsim-client hold: unknown command {other:?} (send, close)");
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}

fn print(out: &mut impl Write, reply: &Reply) -> std::io::Result<()> {
    let line = serde_json::to_string(reply).expect("a reply serialises");
    writeln!(out, "{line}")?;
    out.flush()
}

fn usage(why: &str) -> ExitCode {
    eprintln!(
        "netsim-client: {why}\nusage: netsim-client tcp|udp-connected|udp-unconnected|http TARGET [COUNT] [--timeout-ms MS] [--source-port PORT]\n       netsim-client hold tcp|udp-connected TARGET [--timeout-ms MS]\n       netsim-client pmtu TARGET SIZE [--timeout-ms MS]"
    );
    ExitCode::from(2)
}
