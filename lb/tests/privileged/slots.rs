//! Connected sockets' translations in the cookie-indexed slots (`lb_sock_conn_slots_v1`) and
//! their overflow into `lb_sock_conn_v1`.
//!
//! Two live sockets share a slot when their cookies are equal modulo the slots in use. With
//! the agent's 65 536 slots that takes sockets whose cookies lie 65 536 apart, which a test
//! cannot arrange quickly; the number of slots in use is a load-time setting
//! (`cfg_sock_conn_slots`), so this test loads the programs with one slot, where every live
//! socket after the first shares it. The code path is the one of any collision: the claim
//! fails and the translation goes to the hash map.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::Stdio;

use libtest_mimic::Failed;

use super::support::{self, TestBpffs};
use super::{setup_with_slots, ConnTranslations, BOTH, CHILD_ROLE, SERVICE_IP};

/// A `socket NAME COOKIE PEER` line of the `slot-sharing` child.
#[derive(Debug)]
struct Reported {
    cookie: u64,
    peer: String,
}

fn parse(line: Option<std::io::Result<String>>, name: &str) -> Result<Reported, Failed> {
    let line = line.ok_or(format!("the child printed nothing for socket {name}"))??;
    let fields: Vec<&str> = line.split_whitespace().collect();
    match fields.as_slice() {
        ["socket", n, cookie, peer] if *n == name => Ok(Reported {
            cookie: cookie.parse()?,
            peer: (*peer).to_owned(),
        }),
        _ => Err(format!("expected socket {name}'s line, got {line:?}").into()),
    }
}

/// Where the translation of the socket with `cookie` is: `Some(true)` in a published slot,
/// `Some(false)` in the hash map, `None` nowhere. Both at once is an error, as is a frontend
/// other than the service's port 80.
fn kept_where(bpffs: &TestBpffs, cookie: u64) -> Result<Option<bool>, Failed> {
    let now = ConnTranslations::read(bpffs)?;
    let in_slot: Vec<_> = now.slots.iter().filter(|(_, c, _)| *c == cookie).collect();
    let in_map: Vec<_> = now.entries.iter().filter(|(c, _)| *c == cookie).collect();
    let ports: Vec<u16> = in_slot
        .iter()
        .map(|(_, _, conn)| conn)
        .chain(in_map.iter().map(|(_, conn)| conn))
        .map(|conn| u16::from_be(conn.orig.port))
        .collect();
    if ports.iter().any(|&p| p != 80) {
        return Err(format!("socket {cookie} kept frontend ports {ports:?}, not 80").into());
    }
    match (in_slot.len(), in_map.len()) {
        (0, 0) => Ok(None),
        (1, 0) => Ok(Some(true)),
        (0, 1) => Ok(Some(false)),
        _ => Err(format!("socket {cookie} is kept twice: {now:?}").into()),
    }
}

/// With one slot for all sockets: the first connection takes it, the second overflows into
/// the hash map, both show the service; closing the first frees the slot (its cookie field is
/// zero, no claim left), a third connection takes it again; the agent lists the live two
/// (`translated_sockets`, what the UDP sweep reads) and forgets the third's slot
/// (`forget_translated`) without touching the second, which still shows the service. Once the
/// child exits, nothing is left in either.
pub fn sockets_sharing_a_slot() -> Result<(), Failed> {
    if let Err(e) = lb::host::features::Feature::BpfAtomics.probe() {
        return Err(format!("this kernel has no BPF atomics, which the slots need: {e}").into());
    }
    let (mut lb, cgroup, bpffs) = setup_with_slots("slot-share", BOTH, 1)?;
    let mut child = support::sandboxed_child(CHILD_ROLE, "slot-sharing", &cgroup.path)?
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let service = SocketAddr::from((SERVICE_IP, 80)).to_string();
    let shows_service = |r: &Reported, name: &str| -> Result<(), Failed> {
        if r.peer != service {
            return Err(
                format!("socket {name}'s getpeername gave {}, not {service}", r.peer).into(),
            );
        }
        Ok(())
    };

    let a = parse(lines.next(), "a")?;
    let b = parse(lines.next(), "b")?;
    shows_service(&a, "a")?;
    shows_service(&b, "b")?;
    if kept_where(&bpffs, a.cookie)? != Some(true) {
        return Err("the first socket's translation is not in the one slot".into());
    }
    if kept_where(&bpffs, b.cookie)? != Some(false) {
        return Err("the second socket's translation did not overflow into the hash map".into());
    }

    stdin.write_all(b"close a\n")?;
    let closed = lines
        .next()
        .ok_or("the child printed nothing after closing")??;
    if closed != "closed a" {
        return Err(format!("expected `closed a`, got {closed:?}").into());
    }
    let now = ConnTranslations::read(&bpffs)?;
    if !now.slots.is_empty() {
        return Err(format!("the closed socket's slot is not free: {:?}", now.slots).into());
    }

    stdin.write_all(b"connect d\n")?;
    let d = parse(lines.next(), "d")?;
    shows_service(&d, "d")?;
    if kept_where(&bpffs, d.cookie)? != Some(true) {
        return Err("a socket connecting after the close did not get the freed slot".into());
    }
    // What the agent reads before destroying sockets, and forgets after: both stores.
    let translated = lb.translated_sockets()?;
    let mut cookies: Vec<u64> = translated.iter().map(|(cookie, _)| *cookie).collect();
    cookies.sort_unstable();
    let mut want = vec![b.cookie, d.cookie];
    want.sort_unstable();
    if cookies != want {
        return Err(format!(
            "the agent reads translated sockets {translated:?}, want cookies {want:?}"
        )
        .into());
    }
    let d_pair: Vec<_> = translated
        .into_iter()
        .filter(|(cookie, _)| *cookie == d.cookie)
        .collect();
    lb.forget_translated(&d_pair)?;
    if kept_where(&bpffs, d.cookie)?.is_some() {
        return Err("the agent's forgetting left the slot's translation".into());
    }
    if kept_where(&bpffs, b.cookie)? != Some(false) {
        return Err("forgetting one socket touched another's translation".into());
    }

    stdin.write_all(b"report b\n")?;
    let b_again = parse(lines.next(), "b")?;
    shows_service(&b_again, "b")?;
    drop(stdin);
    if !child.wait()?.success() {
        return Err("the slot-sharing child failed".into());
    }
    super::expect_no_reverse_entries(&bpffs)
}
