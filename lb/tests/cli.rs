//! The binaries as a user runs them: exit codes, stdout and stderr.

use std::path::PathBuf;
use std::process::{Command, Output};

fn data(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(case)
}

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().expect("binary runs")
}

fn agent(args: &[&str]) -> Output {
    run(env!("CARGO_BIN_EXE_lb-agent"), args)
}

fn lbctl(args: &[&str]) -> Output {
    run(env!("CARGO_BIN_EXE_lbctl"), args)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn dry_run_prints_the_effective_configuration() {
    let values = data("nginx-nodeport/values.yaml");
    let out = agent(&[
        "--values",
        values.to_str().unwrap(),
        "--set",
        "maglev.tableSize=65521",
        "--dry-run",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let yaml: serde_yaml::Value = serde_yaml::from_str(&stdout(&out)).unwrap();
    assert_eq!(yaml["kubeProxyReplacement"], true);
    assert_eq!(
        yaml["socketLB"]["enabled"], true,
        "implied by kubeProxyReplacement"
    );
    assert_eq!(yaml["hostPort"]["enabled"], true);
    assert_eq!(
        yaml["maglev"]["tableSize"], 65521,
        "--set wins over the file"
    );
    assert_eq!(yaml["nodePort"]["range"], "30000,32767");
}

/// Each bad option the foundation issue lists, with what the message must name.
#[test]
fn dry_run_rejects_each_bad_option_with_a_clear_message() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["loadBalancer.algoritm=maglev"],
            &[
                "unknown option `loadBalancer.algoritm`",
                "did you mean `loadBalancer.algorithm`",
            ],
        ),
        (
            &["loadBalancer.mode=fast"],
            &["`loadBalancer.mode`", "\"fast\"", "snat", "dsr", "hybrid"],
        ),
        (
            &["loadBalancer.acceleration=turbo"],
            &["`loadBalancer.acceleration`", "native", "best-effort"],
        ),
        (
            &["maglev.tableSize=1000"],
            &["`maglev.tableSize`", "1000", "16381", "65521"],
        ),
        (
            &["maglev.hashSeed=c2hvcnQ="],
            &["`maglev.hashSeed`", "12 bytes"],
        ),
        (
            &[r"nodePort.range=32767\,30000"],
            &["`nodePort.range`", "\"32767,30000\"", "LOW,HIGH"],
        ),
        (
            &["nodePort.range=32767,30000"],
            &["\"30000\" has no '='", r"escaped as \,"],
        ),
        (
            &[
                "kubeProxyReplacement=true",
                "loadBalancer.mode=dsr",
                "loadBalancer.dsrDispatch=opt",
                "routingMode=tunnel",
            ],
            &[
                "loadBalancer.dsrDispatch=opt",
                "routingMode=tunnel",
                "routingMode=native",
            ],
        ),
        (
            &[
                "kubeProxyReplacement=true",
                "routingMode=native",
                "loadBalancer.mode=dsr",
                "loadBalancer.dsrDispatch=geneve",
                "tunnelProtocol=vxlan",
            ],
            &[
                "loadBalancer.dsrDispatch=geneve",
                "tunnelProtocol=vxlan",
                "tunnelProtocol=geneve",
            ],
        ),
        (
            &["loadBalancer.acceleration=native"],
            &["NodePort handling off", "nodePort.enabled=true"],
        ),
        (
            &["routingMode=direct"],
            &["`routingMode`", "native", "tunnel"],
        ),
        (&["devices={eth0,bad/name}"], &["`devices`", "bad/name"]),
        (&["bpf.lbMapMax=0"], &["`bpf.lbMapMax`"]),
        (
            &["hostServices.protocols=sctp"],
            &["`hostServices.protocols`", "tcp,udp"],
        ),
        (
            &["kubeProxyReplacementHealthzBindAddr=localhost"],
            &["`kubeProxyReplacementHealthzBindAddr`", "0.0.0.0:10256"],
        ),
        (
            &["k8sServicePort=99999"],
            &["`k8sServicePort`", "99999", "from 1 to 65535"],
        ),
        (
            &["maglev.tableSize=abc"],
            &["`maglev.tableSize`", "\"abc\"", "251, 509"],
        ),
        (
            &["bpf.lbMapMax=99999999999"],
            &["`bpf.lbMapMax`", "from 1 to 16777216"],
        ),
        (
            &["kubeProxyReplacement=strict"],
            &["`kubeProxyReplacement`", "strict is now true"],
        ),
        (
            &["config.bpfMapDynamicSizeRatio=0.01"],
            &["not supported", "bpf.lbMapMax"],
        ),
        (
            &["cgroup.autoMount.enabled=sometimes"],
            &["`cgroup.autoMount.enabled`", "true or false"],
        ),
        (
            &["maglev.tableSize"],
            &["--set \"maglev.tableSize\"", "KEY=VALUE"],
        ),
    ];
    for (sets, needles) in cases {
        let mut args = Vec::new();
        for s in *sets {
            args.extend(["--set", s]);
        }
        args.push("--dry-run");
        let out = agent(&args);
        let err = stderr(&out);
        assert!(
            !out.status.success(),
            "{sets:?} accepted:\n{}",
            stdout(&out)
        );
        assert!(
            stdout(&out).is_empty(),
            "{sets:?}: nothing is printed on stdout on failure"
        );
        for needle in *needles {
            assert!(err.contains(needle), "{sets:?}: {needle:?} not in:\n{err}");
        }
    }
}

#[test]
fn dry_run_reports_every_error_at_once() {
    let out = agent(&[
        "--set",
        "maglev.tableSize=7",
        "--set",
        "nodePort.range=x",
        "--set",
        "nope=1",
        "--dry-run",
    ]);
    let err = stderr(&out);
    assert!(err.contains("3 invalid option(s)"), "{err}");
}

#[test]
fn agent_without_a_node_name_says_what_to_give() {
    let out = Command::new(env!("CARGO_BIN_EXE_lb-agent"))
        .env_remove("NODE_NAME")
        .output()
        .expect("binary runs");
    assert!(!out.status.success());
    let err = stderr(&out);
    for hint in ["--node NAME", "NODE_NAME", "--manifests DIR", "--dry-run"] {
        assert!(err.contains(hint), "{hint}: {err}");
    }
}

/// The agent's log read from a pipe, as a DaemonSet's log or `lb-agent 2>&1 | tee` reads it,
/// is plain text: no terminal colour sequences around the level or the fields.
#[test]
fn agent_log_to_a_pipe_has_no_colour_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_lb-agent"))
        .env_remove("NODE_NAME")
        .env_remove("NO_COLOR")
        .output()
        .expect("binary runs");
    let err = stderr(&out);
    assert!(err.contains("ERROR"), "the failure is logged: {err:?}");
    assert!(!err.contains('\x1b'), "colour codes in a pipe: {err:?}");
}

/// On a terminal the agent's log is in colour, unless `NO_COLOR` is set.
#[test]
fn agent_log_to_a_terminal_is_in_colour_unless_no_color() {
    let on_terminal = |no_color: Option<&str>| -> String {
        let pty = nix::pty::openpty(None, None).expect("a pseudo-terminal");
        // Not inherited by what other tests start meanwhile, which would hold the terminal
        // open after the agent exits.
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .expect("close-on-exec");
        }
        let mut agent = Command::new(env!("CARGO_BIN_EXE_lb-agent"));
        agent
            .env_remove("NODE_NAME")
            .env_remove("NO_COLOR")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(pty.slave));
        if let Some(value) = no_color {
            agent.env("NO_COLOR", value);
        }
        // The Command holds the only other end: dropping it once the agent is started leaves
        // the agent's as the last, so reading stops (EIO) when the agent has exited.
        let status = {
            let mut child = agent.spawn().expect("binary runs");
            drop(agent);
            child.wait().expect("agent exits")
        };
        assert!(!status.success(), "without a node name the agent fails");
        let mut log = Vec::new();
        let mut master = std::fs::File::from(pty.master);
        let _ = std::io::Read::read_to_end(&mut master, &mut log);
        String::from_utf8_lossy(&log).into_owned()
    };
    let coloured = on_terminal(None);
    assert!(coloured.contains("ERROR"), "{coloured:?}");
    assert!(
        coloured.contains("\x1b["),
        "no colour on a terminal: {coloured:?}"
    );
    let plain = on_terminal(Some("1"));
    assert!(plain.contains("ERROR"), "{plain:?}");
    assert!(
        !plain.contains('\x1b'),
        "colour despite NO_COLOR: {plain:?}"
    );
}

#[test]
fn agent_with_a_missing_kubeconfig_names_it_before_touching_the_node() {
    let state = std::env::temp_dir().join(format!("lb-cli-kubeconfig-{}", std::process::id()));
    let out = agent(&[
        "--node",
        "n1",
        "--kubeconfig",
        "/nonexistent/kubeconfig",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_dir_all(&state);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("Kubernetes API: --kubeconfig /nonexistent/kubeconfig"),
        "{err}"
    );
}

#[test]
fn service_list_exits_3_when_objects_were_rejected() {
    let manifests = data("broken/manifests");
    let out = lbctl(&[
        "service",
        "list",
        "--manifests",
        manifests.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("10.96.1.1:80"),
        "the good service is listed"
    );
    assert!(stderr(&out).contains("Service default/bad-ip: spec.clusterIP: \"10.96.1.999\""));
}

#[test]
fn service_list_json_is_machine_readable() {
    let manifests = data("nginx-nodeport/manifests");
    let out = lbctl(&[
        "service",
        "list",
        "--manifests",
        manifests.to_str().unwrap(),
        "--set",
        "kubeProxyReplacement=true",
        "--node",
        "apoc",
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let entries = json.as_array().unwrap();
    // Without --device the node's InternalIP serves NodePort: ClusterIP, wildcard, InternalIP.
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[2]["frontend"]["addr"]["ip"], "192.168.178.29");
    assert_eq!(entries[2]["backends"][1]["state"], "active");
}

#[test]
fn views_without_a_running_agent_name_the_state_dir_and_how_to_render_offline() {
    let empty = std::env::temp_dir().join(format!("lbctl-no-agent-{}", std::process::id()));
    let out = lbctl(&["service", "list", "--state-dir", empty.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--manifests DIR"), "{err}");
    assert!(
        err.contains(&*empty.join("agent.json").to_string_lossy()),
        "{err}"
    );
    assert!(err.contains("is lb-agent running"), "{err}");
}

#[test]
fn unknown_node_lists_the_nodes_there_are() {
    let manifests = data("nginx-nodeport/manifests");
    let out = lbctl(&[
        "status",
        "--manifests",
        manifests.to_str().unwrap(),
        "--node",
        "neo",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("\"neo\"") && stderr(&out).contains("apoc, tank"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn maglev_prints_the_table_as_json() {
    let out = lbctl(&[
        "maglev",
        "--table-size",
        "251",
        "10.0.0.2:80",
        "10.0.0.1:80@300",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let table: Vec<u64> = json["table"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(table.len(), 251);
    assert_eq!(
        json["backends"],
        serde_json::json!(["10.0.0.2:80/TCP", "10.0.0.1:80/TCP"])
    );
    let heavy = table.iter().filter(|&&i| i == 1).count();
    assert!(
        heavy > 3 * 251 / 4 - 10,
        "weight 300 vs 100 takes about three quarters: {heavy}"
    );
}

#[test]
fn maglev_rejects_a_table_size_not_in_the_list() {
    let out = lbctl(&["maglev", "--table-size", "1000", "10.0.0.1:80"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("maglev.tableSize 1000") && err.contains("1021"),
        "{err}"
    );
}

#[test]
fn dry_run_output_is_a_values_file_that_means_the_same() {
    let first = agent(&[
        "--set",
        "kubeProxyReplacement=true",
        "--set",
        "loadBalancer.algorithm=maglev",
        "--dry-run",
    ]);
    assert!(first.status.success(), "{}", stderr(&first));
    let dir = std::env::temp_dir().join(format!("lb-dry-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("effective.yaml");
    std::fs::write(&file, &first.stdout).unwrap();
    let second = agent(&["--values", file.to_str().unwrap(), "--dry-run"]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(stdout(&first), stdout(&second));
}

/// Runs `bin` with an address-space limit and a deadline, so a loader that loops or grows
/// without bound fails the test instead of exhausting the machine.
fn run_bounded(bin: &str, args: &[&str]) -> Output {
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};
    let quoted: Vec<String> = std::iter::once(bin)
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let script = format!("ulimit -v 2000000; exec {}", quoted.join(" "));
    let out_dir = std::env::temp_dir().join(format!("lb-cli-bounded-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let (stdout_path, stderr_path) = (out_dir.join("stdout"), out_dir.join("stderr"));
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("sh runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{bin} {args:?} did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = Output {
        status,
        stdout: std::fs::read(&stdout_path).unwrap(),
        stderr: std::fs::read(&stderr_path).unwrap(),
    };
    std::fs::remove_dir_all(&out_dir).unwrap();
    assert!(
        status.signal().is_none(),
        "{bin} was killed by signal {:?}: {}",
        status.signal(),
        stderr(&out)
    );
    out
}

/// Defect 11: one file holding `this: is: not: yaml: [` made `service list` push the same
/// parse error forever (23 GiB before the OOM killer).
#[test]
fn service_list_names_a_syntax_error_and_keeps_the_other_files() {
    let dir = std::env::temp_dir().join(format!("lbctl-syntax-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("good.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: good, namespace: default}\n\
         spec: {clusterIP: 10.96.1.1, ports: [{port: 80}]}\n",
    )
    .unwrap();
    std::fs::write(dir.join("bad.yaml"), "this: is: not: yaml: [\n").unwrap();
    let out = run_bounded(
        env!("CARGO_BIN_EXE_lbctl"),
        &["service", "list", "--manifests", dir.to_str().unwrap()],
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stdout(&out).contains("10.96.1.1:80"), "{}", stdout(&out));
    let err = stderr(&out);
    let expected = format!(
        "error: {}:1:9: document 1: not YAML: mapping values are not allowed in this context",
        dir.join("bad.yaml").display()
    );
    assert!(err.contains(&expected), "{err}");
    assert_eq!(err.lines().count(), 1, "one error for one bad file: {err}");
}
