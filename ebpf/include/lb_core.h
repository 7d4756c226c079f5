/* The load-balancing core every program shares: service and frontend lookup, the backend in a
 * slot, session affinity and backend selection. Nothing here knows what kind of program runs
 * it: what differs between a socket hook and a packet program (who the client is for session
 * affinity) comes in as parameters, so the tc and XDP programs include this header without the
 * socket code of lb_sock.h.
 *
 * lb::datapath::sim is the same logic in Rust; keep the two in step.
 */
#ifndef LB_CORE_H
#define LB_CORE_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lb_maps.h"
#include "lb_addr.h"

#define LB_NSEC_PER_SEC 1000000000ULL

/* Frontend types that also answer on every local address through their wildcard entry. */
#define LB_SVC_WILDCARD_TYPES (LB_SVC_NODE_PORT | LB_SVC_HOST_PORT)
/* Frontend types whose port the load balancer owns on this node (bind protection). */
#define LB_SVC_NODE_OWNED_TYPES (LB_SVC_NODE_PORT | LB_SVC_EXTERNAL_IP | LB_SVC_LOADBALANCER)

static __always_inline int lb_svc_has_affinity(const struct lb_service *svc)
{
	return svc->flags & LB_SVC_AFFINITY;
}

/* The service at the frontend. Traffic from inside the cluster (`internal`: a socket of the
 * node or a pod) prefers the internal-scope twin, which follows internalTrafficPolicy; traffic
 * entering a NodePort device from outside takes the external scope only. */
static __always_inline const struct lb_service *lb_lookup_service(struct lb_key *key,
								  int internal)
{
	const struct lb_service *svc;

	key->backend_slot = 0;
	key->scope = LB_SCOPE_EXT;
	svc = bpf_map_lookup_elem(&lb_services_v1, key);
	if (internal && svc && (svc->flags & LB_SVC_TWO_SCOPES)) {
		key->scope = LB_SCOPE_INT;
		svc = bpf_map_lookup_elem(&lb_services_v1, key);
	}
	return svc;
}

/* The frontend for key, or, when key's address is one of this node's (lb_addr_is_node_local,
 * with `loopback_is_node` as there), the wildcard NodePort or HostPort frontend of its port (so
 * 127.0.0.1:NODE_PORT works in the host namespace as the node address does). key's address
 * becomes the wildcard one in that case, for the slot lookups that follow. `internal` as for
 * lb_lookup_service. */
static __always_inline const struct lb_service *
lb_lookup_frontend(struct lb_key *key, int loopback_is_node, int internal)
{
	const struct lb_service *svc = lb_lookup_service(key, internal);

	if (svc || !lb_addr_is_node_local(&key->address, loopback_is_node))
		return svc;
	lb_addr_to_wildcard(&key->address);
	svc = lb_lookup_service(key, internal);
	if (svc && !(svc->flags & LB_SVC_WILDCARD_TYPES))
		return NULL;
	return svc;
}

/* The backend id in key's slot `slot`, or 0 when the slot is empty. */
static __always_inline __u32 lb_slot_backend(struct lb_key *key, __u16 slot)
{
	const struct lb_service *entry;

	key->backend_slot = slot;
	entry = bpf_map_lookup_elem(&lb_services_v1, key);
	return entry ? entry->backend_id : 0;
}

/* The backend a client with session affinity used last, while the affinity is fresh and the
 * backend is still an active backend of svc (lb_affinity_match); 0 otherwise. Refreshes the
 * entry on use. */
static __always_inline __u32 lb_affinity_backend(const struct lb_service *svc,
						 const struct lb_affinity_key *client, __u64 now)
{
	struct lb_affinity_value *last = bpf_map_lookup_elem(&lb_affinity_v1, client);
	struct lb_affinity_match_key match = {};
	__u64 last_used;

	if (!last)
		return 0;
	/* Another CPU may have refreshed last_used after `now` was read: compare by adding, so a
	 * last use later than now counts as fresh instead of underflowing into "expired". */
	last_used = *(volatile __u64 *)&last->last_used_ns;
	if (last_used + (__u64)svc->affinity_timeout * LB_NSEC_PER_SEC < now)
		return 0;
	match.backend_id = last->backend_id;
	match.rev_nat_index = svc->rev_nat_index;
	if (!bpf_map_lookup_elem(&lb_affinity_match_v1, &match))
		return 0;
	last->last_used_ns = now;
	return match.backend_id;
}

/* An active backend of svc: the client's affinity backend when it has one, else a uniformly
 * random one (remembered for affinity). `client_id` names the client for session affinity (a
 * socket's network namespace cookie); it is read only when svc has affinity. NULL when svc has
 * no active backend. */
static __always_inline const struct lb_backend *
lb_select_backend(struct lb_key *key, const struct lb_service *svc, __u64 client_id)
{
	const struct lb_backend *backend;
	struct lb_affinity_key client = {};
	struct lb_affinity_value chosen = {};
	__u64 now = 0;
	__u32 backend_id;

	if (svc->count == 0)
		return NULL;
	if (lb_svc_has_affinity(svc)) {
		client.client_cookie = client_id;
		client.rev_nat_index = svc->rev_nat_index;
		now = bpf_ktime_get_ns();
		backend_id = lb_affinity_backend(svc, &client, now);
		if (backend_id) {
			backend = bpf_map_lookup_elem(&lb_backends_v1, &backend_id);
			if (backend)
				return backend;
			/* Removed between the agent's writes: choose afresh. */
		}
	}
	backend_id = lb_slot_backend(key, (bpf_get_prandom_u32() % svc->count) + 1);
	if (!backend_id)
		return NULL;
	if (lb_svc_has_affinity(svc)) {
		chosen.backend_id = backend_id;
		chosen.last_used_ns = now;
		bpf_map_update_elem(&lb_affinity_v1, &client, &chosen, BPF_ANY);
	}
	return bpf_map_lookup_elem(&lb_backends_v1, &backend_id);
}

#endif /* LB_CORE_H */
