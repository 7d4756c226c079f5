//! [`SocketHooks`]: which of the socket programs are loaded and attached. All of them, unless
//! the kernel lacks an attach type (see `lb::agent::degrade`).

/// Which socket hooks are loaded and attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketHooks {
    /// `sendmsg4/6` and `recvmsg4/6`: UDP.
    pub udp: bool,
    /// `getpeername4/6`.
    pub getpeername: bool,
    /// `bind4/6`: bind protection.
    pub bind: bool,
    /// `sock_release`: closed sockets forget their reverse entries.
    pub sock_release: bool,
}

impl SocketHooks {
    /// Every hook.
    pub const ALL: SocketHooks = SocketHooks {
        udp: true,
        getpeername: true,
        bind: true,
        sock_release: true,
    };

    /// Whether the hook at `attach_type` (`connect4`, `sendmsg6`, `sock_release`, ...) is in.
    pub fn includes(&self, attach_type: &str) -> bool {
        match attach_type.trim_end_matches(['4', '6']) {
            "sendmsg" | "recvmsg" => self.udp,
            "getpeername" => self.getpeername,
            "bind" => self.bind,
            "sock_release" => self.sock_release,
            _ => true,
        }
    }
}
