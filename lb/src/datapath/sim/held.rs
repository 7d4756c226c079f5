//! [`HeldSocket`]: a socket an application keeps open across calls, as the kernel keeps it
//! around the socket hooks. `connect` runs the hooks once and the socket keeps the backend
//! they chose, whatever the maps say later; the agent's sweep after a reconciliation destroys
//! connected UDP sockets whose backend was removed, as `SOCK_DESTROY` does (`udp_abort`).

use std::collections::HashSet;
use std::net::SocketAddr;

use nix::errno::Errno;

use super::{SockCall, SockSim};
use crate::datapath::{canonical, RemovedBackends};
use crate::model::L4Protocol;

/// What the kernel holds for the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Connected to `dst`.
    Connected,
    /// Destroyed: `ECONNABORTED` is pending (`sk_err`) and the socket is disconnected.
    Aborted,
    /// Disconnected, with no error pending any more.
    Disconnected,
}

/// A TCP connection or connected UDP socket held open.
#[derive(Clone, Debug)]
pub struct HeldSocket {
    call: SockCall,
    dst: SocketAddr,
    state: State,
}

impl HeldSocket {
    /// `connect(to)` through the connect hook; the socket is connected to what it chose.
    pub fn connect(sim: &mut SockSim, call: SockCall, to: SocketAddr) -> Self {
        let dst = sim.connect(&call, to);
        HeldSocket {
            call,
            dst,
            state: State::Connected,
        }
    }

    /// Who the socket is (its cookies and protocol).
    pub fn call(&self) -> &SockCall {
        &self.call
    }

    /// Where the socket sends while it is connected: the backend `connect` chose.
    pub fn destination(&self) -> Option<SocketAddr> {
        (self.state == State::Connected).then_some(self.dst)
    }

    /// The agent's sweep after a reconciliation: a connected UDP socket that the connect hook
    /// pointed at a backend now removed (its `(cookie, backend)` is among the reverse map's
    /// `translated` keys) is destroyed, as [`crate::agent::udp_destroy::sweep`] does; one the
    /// application connected to that address itself is left alone. Returns
    /// `(cookie, backend)` when this one was destroyed.
    pub fn sweep(
        &mut self,
        removed: &RemovedBackends,
        translated: &HashSet<(u64, SocketAddr)>,
    ) -> Option<(u64, SocketAddr)> {
        let peer = (self.call.socket_cookie, canonical(self.dst));
        let hit = self.call.protocol == L4Protocol::Udp
            && self.state == State::Connected
            && removed.contains(peer.1)
            && translated.contains(&peer);
        if hit {
            self.state = State::Aborted;
        }
        hit.then_some(peer)
    }

    /// The start of the application's next exchange: the pending error first
    /// (`getsockopt(SO_ERROR)` takes it once), then `send` on a socket the destroy
    /// disconnected fails with `EDESTADDRREQ`; otherwise the datagram or bytes go to the
    /// connected destination, which is returned.
    pub fn exchange(&mut self) -> Result<SocketAddr, Errno> {
        match self.state {
            State::Connected => Ok(self.dst),
            State::Aborted => {
                self.state = State::Disconnected;
                Err(Errno::ECONNABORTED)
            }
            State::Disconnected => Err(Errno::EDESTADDRREQ),
        }
    }

    /// `getpeername` through the hook, on the connected socket.
    pub fn peer_name(&self, sim: &mut SockSim) -> Result<SocketAddr, Errno> {
        match self.state {
            State::Connected => Ok(sim.getpeername(&self.call, self.dst)),
            State::Aborted | State::Disconnected => Err(Errno::ENOTCONN),
        }
    }
}
