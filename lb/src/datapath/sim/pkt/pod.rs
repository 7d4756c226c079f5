//! `lb_pod_ingress` (`lb_from_pod`, `lb_new_pod_flow` in `lb_nodeport.h`): with
//! `socketLB.hostNamespaceOnly`, the packets pods send, met at tc ingress of their host-side
//! interface, where their services are resolved instead of at their sockets.

use ebpf::maps::{counter, scope, svc_flags, LbCtKey, LbKey};

use super::super::packet;
use super::{addr, ct, is_local_reply, Flow, Found, PktOutcome, PktSim, Verdict};

impl PktSim {
    /// `lb_pod_ingress`: a frame a pod sends through its host-side interface `ifindex`.
    pub fn pod_ingress(&mut self, ifindex: u32, frame: &[u8]) -> PktOutcome {
        let mut pkt = frame.to_vec();
        let verdict = self.pod_verdict(ifindex, &mut pkt);
        PktOutcome {
            verdict,
            packet: pkt,
        }
    }

    /// `lb_from_pod`.
    fn pod_verdict(&mut self, ifindex: u32, pkt: &mut Vec<u8>) -> Verdict {
        let Some(p) = packet::parse(pkt) else {
            return Verdict::Pass;
        };
        if self.ct.get(&p.key).is_some_and(|e| !is_local_reply(e)) {
            // `lb_apply`: a pod's flows are never SNATed, so the rewrite is all.
            if let Some(entry) = ct::refresh(&mut self.ct, &p.key, &p, self.now) {
                packet::rewrite(pkt, &p, &entry);
            }
            return Verdict::Pass;
        }
        // `lb_new_pod_flow`.
        let Some(found) = self.lookup_frontend_internal(&p.key) else {
            return Verdict::Pass;
        };
        let node_local =
            !addr::is_loopback(&p.key.daddr) && self.local_addrs.contains(&p.key.daddr);
        if self.config.external_ip_mitigation
            && found.svc.flags & svc_flags::EXTERNAL_IP != 0
            && !node_local
        {
            return Verdict::Pass;
        }
        if found.svc.count == 0 {
            return self.no_backend(ifindex, pkt, &p, &found.svc);
        }
        let Some((backend_id, backend)) = self.select_slot_backend(&found, &p.key) else {
            return self.drop(counter::NO_BACKEND);
        };
        let flow = Flow {
            p,
            rev_nat_index: found.svc.rev_nat_index,
            backend_id,
            backend,
        };
        self.new_local(pkt, &flow)
    }

    /// `lb_lookup_frontend(key, 0, 1)`: the frontend at the packet's destination, its
    /// internal-scope twin when it has one (internalTrafficPolicy), or, on one of the node's
    /// addresses (never loopback: a pod's is its own), the wildcard NodePort or HostPort frontend
    /// of its port.
    fn lookup_frontend_internal(&self, key: &LbCtKey) -> Option<Found> {
        let at = |address| LbKey {
            address,
            dport: key.dport,
            backend_slot: 0,
            proto: key.proto,
            scope: scope::EXT,
            pad: [0; 2],
        };
        // `lb_lookup_service(key, 1)`.
        let service = |svc_key: LbKey| {
            let svc = *self.maps.services.get(&svc_key)?;
            if svc.flags & svc_flags::TWO_SCOPES == 0 {
                return Some(Found { key: svc_key, svc });
            }
            let internal = LbKey {
                scope: scope::INT,
                ..svc_key
            };
            let svc = *self.maps.services.get(&internal)?;
            Some(Found { key: internal, svc })
        };
        if let Some(found) = service(at(key.daddr)) {
            return Some(found);
        }
        if addr::is_loopback(&key.daddr) || !self.local_addrs.contains(&key.daddr) {
            return None;
        }
        let found = service(at(addr::to_wildcard(&key.daddr)))?;
        (found.svc.flags & (svc_flags::NODE_PORT | svc_flags::HOST_PORT) != 0).then_some(found)
    }
}
