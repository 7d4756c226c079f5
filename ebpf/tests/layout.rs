//! The Rust mirrors in `ebpf::maps` have the size and field offsets the C structs have in the
//! built object's BTF, and the Rust constants the values of the C enums there: a drift between
//! C and Rust fails here, not in the kernel.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};

use btf_rs::{Btf, Type};
use ebpf::maps::*;
use object::{Object, ObjectSection};

/// Size and byte offset of every member of the C struct `name`.
fn c_layout(btf: &Btf, name: &str) -> (usize, BTreeMap<String, usize>) {
    let types = btf
        .resolve_types_by_name(name)
        .unwrap_or_else(|e| panic!("struct {name} not in BTF: {e}"));
    let strukt = types
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) => Some(s),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{name} is not a struct in BTF"));
    let members = strukt
        .members
        .iter()
        .map(|m| {
            assert!(
                m.bitfield_size().is_none(),
                "{name}: bitfields are not mirrored"
            );
            (btf.resolve_name(m).unwrap(), m.bit_offset() as usize / 8)
        })
        .collect();
    (strukt.size(), members)
}

fn sock_lb_btf() -> Btf {
    object_btf(ebpf::sock_lb_object())
}

fn nodeport_btf() -> Btf {
    object_btf(ebpf::nodeport_object())
}

fn object_btf(bytes: &[u8]) -> Btf {
    let file = object::File::parse(bytes).expect("the object is ELF");
    let section = file
        .section_by_name(".BTF")
        .expect("built with -g: has .BTF");
    Btf::from_bytes(section.data().unwrap()).expect("valid BTF")
}

macro_rules! assert_layout {
    ($btf:expr, $c:literal, $rust:ty, [$($field:ident),+ $(,)?]) => {{
        let (size, members) = c_layout($btf, $c);
        assert_eq!(size_of::<$rust>(), size, "size of {} vs struct {}", stringify!($rust), $c);
        let rust: BTreeMap<String, usize> =
            [$((stringify!($field).to_owned(), offset_of!($rust, $field))),+].into_iter().collect();
        assert_eq!(rust, members, "fields of {} vs struct {}", stringify!($rust), $c);
    }};
}

#[test]
fn rust_mirrors_match_the_objects_btf() {
    let btf = sock_lb_btf();
    assert_layout!(
        &btf,
        "lb_key",
        LbKey,
        [address, dport, backend_slot, proto, scope, pad]
    );
    assert_layout!(
        &btf,
        "lb_service",
        LbService,
        [
            backend_id,
            count,
            qcount,
            rev_nat_index,
            flags,
            flags2,
            affinity_timeout
        ]
    );
    assert_layout!(&btf, "lb_backend", LbBackend, [address, port, proto, state]);
    assert_layout!(&btf, "lb_reverse_nat", LbReverseNat, [address, port, pad]);
    assert_layout!(&btf, "lb_sock_key", LbSockKey, [cookie, address, port, pad]);
    assert_layout!(
        &btf,
        "lb_sock_value",
        LbSockValue,
        [address, port, rev_nat_index]
    );
    assert_layout!(
        &btf,
        "lb_sock_conn",
        LbSockConn,
        [backend, backend_port, pad, orig]
    );
    assert_layout!(&btf, "lb_sock_conn_slot", LbSockConnSlot, [cookie, conn]);
    assert_layout!(
        &btf,
        "lb_affinity_key",
        LbAffinityKey,
        [client_cookie, rev_nat_index, pad]
    );
    assert_layout!(
        &btf,
        "lb_affinity_value",
        LbAffinityValue,
        [backend_id, pad, last_used_ns]
    );
    assert_layout!(
        &btf,
        "lb_affinity_match_key",
        LbAffinityMatchKey,
        [backend_id, rev_nat_index, pad]
    );
    assert_layout!(&btf, "lb_local_addr", LbLocalAddr, [flags]);
    assert_layout!(
        &btf,
        "lb_src_range_key",
        LbSrcRangeKey,
        [prefixlen, rev_nat_index, pad, address]
    );
    // aya's LPM key is a u32 prefix length followed by this data.
    assert_eq!(size_of::<LbSrcRange>() + 4, size_of::<LbSrcRangeKey>());
}

#[test]
fn packet_map_mirrors_match_the_nodeport_objects_btf() {
    let btf = nodeport_btf();
    assert_layout!(
        &btf,
        "lb_ct_key",
        LbCtKey,
        [saddr, daddr, sport, dport, proto, pad]
    );
    assert_layout!(
        &btf,
        "lb_ct_entry",
        LbCtEntry,
        [
            saddr,
            daddr,
            sport,
            dport,
            rev_nat_index,
            flags,
            pad,
            backend_id,
            expires,
            hop
        ]
    );
    assert_layout!(&btf, "lb_ct_hop", LbCtHop, [ifindex, checked, smac, dmac]);
    // lb_ct_v1's value, which no object defines any more: version 2 without its hop.
    assert_eq!(
        size_of::<LbCtEntryV1>(),
        size_of::<LbCtEntry>() - size_of::<LbCtHop>()
    );
    assert_eq!(offset_of!(LbCtEntry, hop), size_of::<LbCtEntryV1>());
    assert_layout!(&btf, "lb_device", LbDevice, [addr4, addr6, flags]);
    assert_eq!(
        member_type(&btf, "lb_ct_entry", "flags"),
        "enum lb_ct_flags",
        "lb_ct_entry.flags"
    );
}

/// The Maglev map is sized by `key_size`/`value_size` rather than BTF types (its value's length
/// is set at load time): its key is the `u32` rev_nat_index and its declared value
/// [`MAGLEV_PLACEHOLDER_M`] backend ids, a hash without preallocation, as the agent creates it.
#[test]
fn the_maglev_map_holds_u32_backend_ids_per_u32_frontend() {
    let obj = aya_obj::Object::parse(ebpf::nodeport_object()).expect("nodeport.o parses");
    let map = obj.maps.get(LB_MAGLEV).expect("lb_maglev_v1 in nodeport.o");
    const BPF_MAP_TYPE_HASH: u32 = 1;
    const BPF_F_NO_PREALLOC: u32 = 1;
    assert_eq!(map.map_type(), BPF_MAP_TYPE_HASH);
    assert_eq!(map.key_size() as usize, size_of::<u32>());
    assert_eq!(
        map.value_size() as usize,
        MAGLEV_PLACEHOLDER_M as usize * size_of::<u32>()
    );
    assert_eq!(map.map_flags(), BPF_F_NO_PREALLOC);
}

/// The enum `name` of the BTF: its size and `(constant, value)` pairs.
fn c_enum(btf: &Btf, name: &str) -> (usize, BTreeMap<String, u64>) {
    let e = btf
        .resolve_types_by_name(name)
        .unwrap_or_else(|e| panic!("enum {name} not in BTF: {e}"))
        .into_iter()
        .find_map(|t| match t {
            Type::Enum(e) => Some(e),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{name} is not an enum in BTF"));
    let values = e
        .members
        .iter()
        .map(|m| (btf.resolve_name(m).unwrap(), u64::from(m.val())))
        .collect();
    (e.size(), values)
}

/// The name of the type of member `field` of struct `strukt`, as BTF has it.
fn member_type(btf: &Btf, strukt: &str, field: &str) -> String {
    let s = btf
        .resolve_types_by_name(strukt)
        .unwrap()
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) => Some(s),
            _ => None,
        })
        .unwrap();
    let m = s
        .members
        .iter()
        .find(|m| btf.resolve_name(*m).unwrap() == field)
        .unwrap_or_else(|| panic!("{strukt} has no member {field}"));
    match btf.resolve_chained_type(m).unwrap() {
        Type::Enum(e) => format!("enum {}", btf.resolve_name(&e).unwrap()),
        Type::Typedef(t) => btf.resolve_name(&t).unwrap(),
        Type::Int(i) => btf.resolve_name(&i).unwrap(),
        other => format!("{other:?}"),
    }
}

#[test]
fn rust_constants_are_the_c_enums_of_the_objects_btf() {
    let (sock, packet) = (sock_lb_btf(), nodeport_btf());
    for (name, constants) in C_ENUMS {
        // The packet programs' enums are in their object only.
        let has_enum = |btf: &Btf| {
            btf.resolve_types_by_name(name)
                .is_ok_and(|types| types.iter().any(|t| matches!(t, Type::Enum(_))))
        };
        let btf = if has_enum(&sock) { &sock } else { &packet };
        let (size, values) = c_enum(btf, name);
        assert_eq!(size, 1, "enum {name} is one byte, as the fields holding it");
        let rust: BTreeMap<String, u64> = constants
            .iter()
            .map(|(c, v)| ((*c).to_owned(), u64::from(*v)))
            .collect();
        assert_eq!(rust, values, "constants of enum {name}");
    }
}

#[test]
fn the_fields_holding_enum_values_are_typed_by_the_enums() {
    let btf = sock_lb_btf();
    for (strukt, field, ty) in [
        ("lb_key", "scope", "enum lb_scope"),
        ("lb_service", "flags", "enum lb_svc_flags"),
        ("lb_service", "flags2", "enum lb_svc_flags2"),
        ("lb_backend", "state", "enum lb_backend_state"),
        ("lb_trace_sock", "kind", "enum lb_trace_kind"),
    ] {
        assert_eq!(member_type(&btf, strukt, field), ty, "{strukt}.{field}");
    }
}

/// A perf event array has no value type; `lb_trace.h` pins the event's layout with static
/// asserts on these same numbers, and an anchor variable puts it into the BTF.
#[test]
fn the_trace_event_mirror_matches_the_static_asserts_in_lb_trace_h() {
    let btf = sock_lb_btf();
    assert_layout!(
        &btf,
        "lb_trace_sock",
        LbTraceSock,
        [cgroup_id, sock_cookie, address, port, kind, proto, cpu]
    );
    assert_eq!(size_of::<LbTraceSock>(), 40);
    assert_eq!(offset_of!(LbTraceSock, cgroup_id), 0);
    assert_eq!(offset_of!(LbTraceSock, sock_cookie), 8);
    assert_eq!(offset_of!(LbTraceSock, address), 16);
    assert_eq!(offset_of!(LbTraceSock, port), 32);
    assert_eq!(offset_of!(LbTraceSock, kind), 34);
    assert_eq!(offset_of!(LbTraceSock, proto), 35);
    assert_eq!(offset_of!(LbTraceSock, cpu), 36);
    assert_eq!(size_of::<LbTraceRecord>(), 48);
    assert_eq!(offset_of!(LbTraceRecord, ktime_ns), 40);
}

#[test]
fn the_address_union_is_sixteen_bytes() {
    let btf = sock_lb_btf();
    let types = btf.resolve_types_by_name("lb_addr").unwrap();
    let size = types
        .into_iter()
        .find_map(|t| match t {
            Type::Union(u) => Some(u.size()),
            _ => None,
        })
        .expect("union lb_addr in BTF");
    assert_eq!(size, size_of::<LbAddr>());
}

#[test]
fn every_named_map_and_program_is_in_both_builds() {
    for object in [ebpf::sock_lb_object(), ebpf::sock_lb_atomics_object()] {
        let file = object::File::parse(object).unwrap();
        let symbols: Vec<String> = file
            .symbols()
            .filter_map(|s| object::ObjectSymbol::name(&s).ok().map(str::to_owned))
            .collect();
        for name in SOCK_LB_MAPS {
            assert!(
                symbols.iter().any(|s| s == name),
                "map {name} missing from {symbols:?}"
            );
        }
        for (program, _) in ebpf::SOCK_LB_PROGRAMS
            .iter()
            .chain([&ebpf::SOCK_LB_RELEASE_PROGRAM])
        {
            assert!(
                symbols.iter().any(|s| s == program),
                "program {program} missing"
            );
        }
    }
}

/// The slot count the agent loads (`SOCK_CONN_SLOTS`) is the array's size in the object, and
/// only the build for atomics has the setting that turns the slots on.
#[test]
fn the_slot_array_has_the_slots_the_agent_uses() {
    for object in [ebpf::sock_lb_object(), ebpf::sock_lb_atomics_object()] {
        let obj = aya_obj::Object::parse(object).unwrap();
        let map = obj.maps.get(LB_SOCK_CONN_SLOTS).expect("the slot array");
        assert_eq!(map.max_entries(), SOCK_CONN_SLOTS);
        assert!(SOCK_CONN_SLOTS.is_power_of_two());
    }
    let has_setting = |object: &[u8]| {
        let file = object::File::parse(object).unwrap();
        file.symbols()
            .any(|s| object::ObjectSymbol::name(&s) == Ok("cfg_sock_conn_slots"))
    };
    assert!(has_setting(ebpf::sock_lb_atomics_object()));
    assert!(!has_setting(ebpf::sock_lb_object()));
}

/// The tc and XDP programs include the load-balancing core without the socket code: nothing in
/// `lb_core.h` or what it includes may name a socket context.
#[test]
fn the_shared_core_knows_no_socket_context() {
    let include = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    for header in ["lb_core.h", "lb_maps.h", "lb_addr.h", "lb_types.h"] {
        let text = std::fs::read_to_string(include.join(header)).unwrap();
        for word in [
            "bpf_sock",
            "#include \"lb_sock.h\"",
            "#include \"lb_trace.h\"",
            "cfg_",
        ] {
            assert!(!text.contains(word), "{header} mentions {word}");
        }
    }
}

/// The connected sockets' map holds `struct lb_sock_conn` values, which [`LbSockConn`] mirrors
/// (checked above), so what the agent reads there is what the programs wrote.
#[test]
fn the_connected_sockets_map_holds_their_translations() {
    let btf = sock_lb_btf();
    let var = btf
        .resolve_types_by_name(LB_SOCK_CONN)
        .unwrap()
        .into_iter()
        .find_map(|t| match t {
            Type::Var(v) => Some(v),
            _ => None,
        })
        .expect("the map's variable in BTF");
    let Type::Struct(def) = btf.resolve_chained_type(&var).unwrap() else {
        panic!("{LB_SOCK_CONN} is not a map definition struct");
    };
    let value = def
        .members
        .iter()
        .find(|m| btf.resolve_name(*m).unwrap() == "value")
        .expect("a value member");
    let Type::Ptr(ptr) = btf.resolve_chained_type(value).unwrap() else {
        panic!("the value member is not a pointer");
    };
    let Type::Struct(s) = btf.resolve_chained_type(&ptr).unwrap() else {
        panic!("the value is not a struct");
    };
    assert_eq!(btf.resolve_name(&s).unwrap(), "lb_sock_conn");
    assert_eq!(s.size(), size_of::<LbSockConn>());
}
