/* Map keys and values of the load balancer, shared by every program and mirrored in Rust by
 * ebpf/src/maps.rs (a test checks both against this object's BTF).
 *
 * One set of maps serves both families: an address is 16 bytes, IPv6 as is and IPv4 as an
 * IPv4-mapped IPv6 address (::ffff:a.b.c.d), so every lookup and translation is written once,
 * and a dual-stack socket that connects to ::ffff:a.b.c.d finds the IPv4 service. Ports are in
 * network byte order; padding is explicit so the layout is the same on every compiler.
 */
#ifndef LB_TYPES_H
#define LB_TYPES_H

#include <linux/types.h>

/* The constants below are enums with a one-byte underlying type (a clang extension to C17),
 * so that the struct fields holding them are typed by them and the enums reach the object's
 * BTF: ebpf/tests/layout.rs checks the Rust constants against their values there. */

/* Service scopes: one frontend may exist twice when its traffic policies differ. */
enum lb_scope : __u8 {
	LB_SCOPE_EXT = 0, /* traffic from outside the cluster, or all traffic */
	LB_SCOPE_INT = 1, /* traffic from inside the cluster when the policies differ */
};

/* Bits of lb_service.flags. */
enum lb_svc_flags : __u8 {
	LB_SVC_CLUSTER_IP = 1 << 0,   /* a ClusterIP frontend */
	LB_SVC_NODE_PORT = 1 << 1,    /* a NodePort frontend */
	LB_SVC_EXTERNAL_IP = 1 << 2,  /* an externalIPs frontend */
	LB_SVC_LOADBALANCER = 1 << 3, /* a LoadBalancer ingress frontend */
	LB_SVC_HOST_PORT = 1 << 4,    /* a HostPort frontend */
	LB_SVC_TWO_SCOPES = 1 << 5,   /* an internal-scope twin exists */
	LB_SVC_AFFINITY = 1 << 6,     /* sessionAffinity: ClientIP */
	LB_SVC_NO_LOCAL_BACKEND = 1 << 7, /* traffic policy Local and no endpoint on this node,
					   * though others have some: drop, not reject */
};

/* Bits of lb_service.flags2 (lb_service.flags is full). */
enum lb_svc_flags2 : __u8 {
	LB_SVC2_SOURCE_RANGES = 1 << 0, /* loadBalancerSourceRanges: external clients must match
					 * one of the frontend's lb_source_ranges entries */
};

/* lb_backend.state: only active backends are chosen for new connections. */
enum lb_backend_state : __u8 {
	LB_BACKEND_ACTIVE = 0,      /* ready: takes new connections */
	LB_BACKEND_TERMINATING = 1, /* terminating but serving: kept for existing flows */
	LB_BACKEND_QUARANTINED = 2, /* failed health checks */
	LB_BACKEND_MAINTENANCE = 3, /* taken out by the operator */
};

/* trace-sock event kinds (lbctl monitor -t trace-sock prints their names). */
enum lb_trace_kind : __u8 {
	LB_TRACE_PRE_XLATE_FWD = 1,  /* connect/sendmsg, before translation */
	LB_TRACE_POST_XLATE_FWD = 2, /* connect/sendmsg, after translation */
	LB_TRACE_PRE_XLATE_REV = 3,  /* recvmsg/getpeername, before translation */
	LB_TRACE_POST_XLATE_REV = 4, /* recvmsg/getpeername, after translation */
};

/* Bits of lb_ct_entry.flags. */
enum lb_ct_flags : __u8 {
	LB_CT_REPLY = 1 << 0,   /* translates the replies of a flow (backend -> client) */
	LB_CT_SNAT = 1 << 1,    /* the backend is on another node: the flow's source is the node's
				 * and its packets are forwarded by FIB lookup and redirect */
	LB_CT_CLOSING = 1 << 2, /* a TCP FIN or RST was seen: the entry lives LB_CT_CLOSE_SECS */
};

/* Indexes of lb_counters (per CPU, summed by lbctl): why the packet programs dropped or
 * passed a service's packet. */
enum lb_counter : __u8 {
	LB_CNT_NO_BACKEND = 0,      /* service without active backends: dropped */
	LB_CNT_SNAT_EXHAUSTED = 1,  /* no free SNAT port for the flow: dropped */
	LB_CNT_NO_DEVICE_ADDR = 2,  /* the egress device has no address of the family: dropped */
	LB_CNT_FIB_FAILED = 3,      /* no route to the backend or client: dropped */
	LB_CNT_TTL_EXCEEDED = 4,    /* TTL or hop limit would reach 0 when forwarded: dropped */
	LB_CNT_CT_FULL = 5,         /* a conntrack entry could not be written: dropped */
	LB_CNT_NO_LOCAL_BACKEND = 6, /* traffic policy Local, no endpoint on this node: dropped */
	LB_CNT_SOURCE_RANGE = 7,    /* client outside loadBalancerSourceRanges: dropped */
	LB_CNT_MAX = 8,             /* number of counters */
};

/* An IPv6 address, or an IPv4 address mapped into IPv6. */
union lb_addr {
	__u8 bytes[16];   /* network order */
	__be32 words[4];  /* the same, as four words */
};

/* Key of lb_services: slot 0 is the service itself, slots 1..count its active backends and
 * count+1..count+qcount the terminating ones (kept for existing flows, never chosen). */
struct lb_key {
	union lb_addr address; /* frontend address */
	__be16 dport;          /* frontend port */
	__u16 backend_slot;    /* 0: the service; 1..: a backend slot */
	__u8 proto;            /* IPPROTO_TCP or IPPROTO_UDP */
	enum lb_scope scope;   /* LB_SCOPE_EXT or LB_SCOPE_INT */
	__u8 pad[2];           /* explicit padding, always zero */
};

/* Value of lb_services. */
struct lb_service {
	__u32 backend_id;       /* slot > 0: the backend in this slot (lb_backends key) */
	__u16 count;            /* slot 0: number of active backend slots */
	__u16 qcount;           /* slot 0: number of terminating backend slots after them */
	__u16 rev_nat_index;    /* id of the frontend (lb_reverse_nat key, the service id) */
	enum lb_svc_flags flags; /* LB_SVC_* bits */
	enum lb_svc_flags2 flags2; /* slot 0: LB_SVC2_* bits (this byte was padding before, always
				    * zero, so older entries read as no bits) */
	__u32 affinity_timeout; /* slot 0: session affinity timeout in seconds, 0 without */
};

/* Value of lb_backends, keyed by a __u32 backend id. */
struct lb_backend {
	union lb_addr address; /* backend address */
	__be16 port;           /* backend port */
	__u8 proto;            /* IPPROTO_TCP or IPPROTO_UDP */
	enum lb_backend_state state; /* LB_BACKEND_* */
};

/* Value of lb_reverse_nat, keyed by a __u16 rev_nat_index: the frontend to show the
 * application. */
struct lb_reverse_nat {
	union lb_addr address; /* frontend address */
	__be16 port;           /* frontend port */
	__u16 pad;             /* explicit padding, always zero */
};

/* Key of lb_reverse_sk: a socket and the backend it was sent to. */
struct lb_sock_key {
	__u64 cookie;          /* socket cookie */
	union lb_addr address; /* backend address */
	__be16 port;           /* backend port */
	__u8 pad[6];           /* explicit padding, always zero */
};

/* Value of lb_reverse_sk: the frontend the socket asked for. */
struct lb_sock_value {
	union lb_addr address; /* frontend address */
	__be16 port;           /* frontend port */
	__u16 rev_nat_index;   /* frontend id, to check it still exists */
};

/* Value of lb_sock_conn, keyed by a socket cookie: where a connected socket's translated
 * connect sent it and what it asked for. */
struct lb_sock_conn {
	union lb_addr backend;     /* backend address */
	__be16 backend_port;       /* backend port */
	__u8 pad[2];               /* explicit padding, always zero */
	struct lb_sock_value orig; /* the frontend the socket asked for */
};

/* Value of lb_sock_conn_slots: one connected socket's translation in the slot its cookie picks
 * (cookie % the slots in use). cookie is 0 while the slot is free; with its top bit set
 * (LB_SOCK_SLOT_CLAIMED) a connect is writing conn and no reader may use it. */
struct lb_sock_conn_slot {
	__u64 cookie;              /* the socket that holds the slot, 0 when free */
	struct lb_sock_conn conn;  /* its translation, valid while cookie is the socket's */
};

/* Key of lb_affinity: a client (its network namespace, for socket-level traffic) and a
 * frontend (sessionAffinity is per service IP and port). */
struct lb_affinity_key {
	__u64 client_cookie;   /* netns cookie of the client */
	__u16 rev_nat_index;   /* the frontend's id */
	__u8 pad[6];           /* explicit padding, always zero */
};

/* Value of lb_affinity: the backend the client was sent to, and when it last was. It is reused
 * while lb_affinity_match says the backend is still an active backend of the frontend, whatever
 * slot it now holds. (Bytes 4-7 held a slot number before; they are ignored, so the layout and
 * the map's name stay.) */
struct lb_affinity_value {
	__u32 backend_id;      /* lb_backends key */
	__u32 pad;             /* explicit padding, always zero */
	__u64 last_used_ns;    /* CLOCK_MONOTONIC (bpf_ktime_get_ns) of the last use */
};

/* Key of lb_affinity_match: a backend that is an active backend of a frontend with session
 * affinity. The agent keeps one entry per such pair; the value is a reserved zero byte. */
struct lb_affinity_match_key {
	__u32 backend_id;      /* lb_backends key */
	__u16 rev_nat_index;   /* the frontend's id */
	__u16 pad;             /* explicit padding, always zero */
};

/* Key of lb_source_ranges, an LPM trie: a frontend and a client CIDR. The prefix length counts
 * the bits after it: 32 for the frontend id and padding, then the CIDR's length in the 128-bit
 * form (96 + n for an IPv4 /n). */
struct lb_src_range_key {
	__u32 prefixlen;       /* 32 + the CIDR's length as an IPv6-form prefix */
	__u16 rev_nat_index;   /* the frontend's id */
	__u16 pad;             /* explicit padding, always zero */
	union lb_addr address; /* the CIDR's network address (IPv4 mapped) */
};

/* Value of lb_local_addrs, keyed by union lb_addr: an address of this node, where a wildcard
 * NodePort or HostPort frontend answers as it does on 127.0.0.1. */
struct lb_local_addr {
	__u8 flags;            /* reserved, zero */
};

/* One trace-sock event, sent through lb_events when lb_monitor is on. */
struct lb_trace_sock {
	__u64 cgroup_id;       /* cgroup v2 id of the calling process */
	__u64 sock_cookie;     /* socket cookie */
	union lb_addr address; /* the destination (fwd) or peer (rev) at this point */
	__be16 port;           /* its port */
	enum lb_trace_kind kind; /* LB_TRACE_* */
	__u8 proto;            /* IPPROTO_TCP or IPPROTO_UDP */
	__u32 cpu;             /* CPU the hook ran on */
};

/* Key of lb_ct: a packet's addresses and ports as it arrives at the program. */
struct lb_ct_key {
	union lb_addr saddr;   /* source */
	union lb_addr daddr;   /* destination */
	__be16 sport;          /* source port */
	__be16 dport;          /* destination port */
	__u8 proto;            /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad[3];           /* explicit padding, always zero */
};

/* The next hop a forwarded flow's packets leave by (lb_ct_entry.hop): what bpf_fib_lookup
 * answered for the entry's rewritten tuple, and the second it answered. ifindex 0: none yet. */
struct lb_ct_hop {
	__u32 ifindex;         /* the device the packets leave by */
	__u32 checked;         /* CLOCK_MONOTONIC second of the lookup */
	__u8 smac[6];          /* that device's address */
	__u8 dmac[6];          /* the next hop's */
};

/* Value of lb_ct: what a packet with the key's tuple leaves with. Every flow has two entries:
 * the original direction's (client -> frontend, rewritten to the backend) and the reply's
 * (backend -> client or the SNAT address, rewritten to frontend -> client, LB_CT_REPLY). Each
 * entry's rewritten tuple, reversed, is the other's key. */
struct lb_ct_entry {
	union lb_addr saddr;   /* new source */
	union lb_addr daddr;   /* new destination */
	__be16 sport;          /* new source port */
	__be16 dport;          /* new destination port */
	__u16 rev_nat_index;   /* the frontend's id */
	enum lb_ct_flags flags; /* LB_CT_* */
	__u8 pad;              /* explicit padding, always zero */
	__u32 backend_id;      /* the backend chosen (lb_backends key) */
	__u32 expires;         /* CLOCK_MONOTONIC second after which the entry is stale */
	struct lb_ct_hop hop;  /* LB_CT_SNAT: where the last packets were forwarded */
};

/* Value of lb_devices, keyed by a __u32 ifindex: a device that leads to other nodes and to
 * external clients (the `devices` option), with the node's addresses on it, the source of
 * SNATed flows that leave through it. */
struct lb_device {
	union lb_addr addr4;   /* IPv4 address (mapped); zero when it has none */
	union lb_addr addr6;   /* IPv6 address; zero when it has none */
	__u32 flags;           /* reserved, zero */
};

/* What the NodePort XDP program leaves for the tc ingress program of the same device when it
 * passes a packet on: what tc is to do with it, so tc does not look the packet up again. */
enum lb_xfer_action {
	LB_XFER_DONE = 1,           /* XDP decided (and translated, if it was to): pass it */
	LB_XFER_REDIRECT_NEIGH = 2, /* translated; send it out of ifindex, resolving the neighbour */
	LB_XFER_REJECT = 3,         /* answer it with an ICMP unreachable (XDP could not grow it) */
};

#define LB_XFER_MAGIC 0x4c420000u      /* "LB" in the high half of lb_xfer.magic */
#define LB_XFER_MAGIC_MASK 0xffff0000u

/* The packet's XDP metadata (bpf_xdp_adjust_meta), read by tc as skb->data_meta. */
struct lb_xfer {
	__u32 magic;           /* LB_XFER_MAGIC | enum lb_xfer_action, host order */
	__u32 ifindex;         /* LB_XFER_REDIRECT_NEIGH: the device to leave through */
};

#endif /* LB_TYPES_H */
