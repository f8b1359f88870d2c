//! Test hosts in Linux network namespaces, and the faults a real network
//! has, for tests that must see what loopback never shows: a peer that
//! vanishes without a FIN or RST, loss, a bandwidth cap.
//!
//! [`Net::new`] makes `n` hosts, each a network namespace with one `eth0`
//! at `198.18.0.<i+1>/16` (198.18.0.0/15 is reserved for benchmark
//! testing), joined by veth pairs to a bridge in a namespace of its own:
//! nothing is created in, or routed through, the machine's own namespace.
//! Every name starts with `fpn-<tag>-`; dropping the [`Net`] deletes its
//! namespaces (and with them their links and rules) and kills the
//! processes it started, also when the test panics; a leftover of a killed
//! run with the same tag is deleted before a new one starts.
//!
//! Needs root, `ip` and `tc` (iproute2), `nft` (nftables) and `ethtool`:
//! without them
//! [`Net::new`] panics with the reason — these tests never pass silently.
//! The kernel here lacks `sch_netem`, so added latency, jitter,
//! reordering and duplication come from a user-space delay line
//! (`delay-box`, [`Net::delay`]) between a host and the bridge; loss is
//! an nftables rule (`numgen random`), a bandwidth cap a `tbf` qdisc, a
//! partition an nftables rule that drops everything.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};

/// A set of test hosts.
pub struct Net {
    prefix: String,
    hosts: Vec<Host>,
    children: Vec<Child>,
}

/// One test host: a network namespace with one address.
#[derive(Clone, Debug)]
pub struct Host {
    /// The namespace's name.
    pub ns: String,
    /// Its address on the test network.
    pub addr: Ipv4Addr,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(args: &[&str]) {
    if let Err(e) = run(args) {
        panic!("{e}");
    }
}

fn namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

impl Net {
    /// Makes `n` hosts (at most 200) named `fpn-<tag>-h<i>`, on a bridge
    /// in `fpn-<tag>-sw`.
    ///
    /// # Panics
    ///
    /// When not root or a tool is missing (with the reason), or when a
    /// step fails.
    pub fn new(tag: &str, n: usize) -> Net {
        assert!(n <= 200);
        let euid = Command::new("id").arg("-u").output().expect("id -u").stdout;
        assert_eq!(
            String::from_utf8_lossy(&euid).trim(),
            "0",
            "network-namespace tests need root (they create namespaces, links and nftables rules); run them as root"
        );
        for tool in ["ip", "nft", "tc", "ethtool"] {
            assert!(
                Command::new(tool)
                    .arg("-V")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok(),
                "`{tool}` is missing: install iproute2, nftables and ethtool (.ci/test does)"
            );
        }
        let prefix = format!("fpn-{tag}-");
        for old in namespaces().iter().filter(|ns| ns.starts_with(&prefix)) {
            eprintln!("netns: deleting a leftover namespace {old}");
            let _ = run(&["ip", "netns", "del", old]);
        }
        let mut net = Net {
            prefix: prefix.clone(),
            hosts: Vec::new(),
            children: Vec::new(),
        };
        let sw = format!("{prefix}sw");
        must(&["ip", "netns", "add", &sw]);
        must(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"]);
        must(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        for i in 0..n {
            let ns = format!("{prefix}h{i}");
            must(&["ip", "netns", "add", &ns]);
            let port = format!("p{i}");
            // Both ends are made inside the namespaces: nothing appears in
            // the machine's own namespace, even for a moment.
            must(&[
                "ip", "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            must(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"]);
            let addr = Ipv4Addr::new(198, 18, 0, u8::try_from(i + 1).unwrap());
            must(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/16"),
                "dev",
                "eth0",
            ]);
            must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            net.hosts.push(Host { ns, addr });
        }
        net
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Starts `program args` inside host `i`'s namespace (`ip netns exec`
    /// execs it: the child's pid is the program's), with `stdout` captured
    /// if asked; it is killed when the `Net` drops, if still running.
    pub fn spawn(&mut self, i: usize, program: &str, args: &[&str], capture: bool) -> u32 {
        self.spawn_with(i, program, args, capture, true)
    }

    /// As [`spawn`](Self::spawn); `stderr: false` discards the program's
    /// stderr (a chatty server's logs).
    pub fn spawn_with(
        &mut self,
        i: usize,
        program: &str,
        args: &[&str],
        capture: bool,
        stderr: bool,
    ) -> u32 {
        let mut cmd = self.command(i, program, args, capture);
        if !stderr {
            cmd.stderr(Stdio::null());
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} in {}: {e}", self.hosts[i].ns));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// The command that runs `program args` in host `i`'s namespace.
    pub fn command(&self, i: usize, program: &str, args: &[&str], capture: bool) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hosts[i].ns, program])
            .args(args)
            .stdin(Stdio::null());
        if capture {
            c.stdout(Stdio::piped());
        }
        c
    }

    /// Takes the child started as `pid` (to wait for its output).
    pub fn take_child(&mut self, pid: u32) -> Child {
        let at = self
            .children
            .iter()
            .position(|c| c.id() == pid)
            .expect("a child of this Net");
        self.children.swap_remove(at)
    }

    /// Runs `args` inside host `i`'s namespace; panics if it fails.
    fn exec(&self, i: usize, args: &[&str]) {
        let mut all = vec!["ip", "netns", "exec", self.hosts[i].ns.as_str()];
        all.extend_from_slice(args);
        must(&all);
    }

    fn nft(&self, i: usize, script: &str) {
        self.exec(i, &["nft", script]);
    }

    /// Silently partitions host `i`: every packet in or out of its `eth0`
    /// is dropped (no RST, no ICMP), until [`heal`](Self::heal).
    pub fn partition(&self, i: usize) {
        self.nft(
            i,
            "table inet fpn_fault { \
               chain in { type filter hook input priority 0; policy accept; iifname \"eth0\" drop; }; \
               chain out { type filter hook output priority 0; policy accept; oifname \"eth0\" drop; }; \
             }",
        );
    }

    /// Drops `percent`% of the packets host `i` receives and sends, at
    /// random, until [`heal`](Self::heal).
    pub fn loss(&self, i: usize, percent: u32) {
        self.nft(
            i,
            &format!(
                "table inet fpn_fault {{ \
                   chain in {{ type filter hook input priority 0; policy accept; \
                     iifname \"eth0\" numgen random mod 100 < {percent} drop; }}; \
                   chain out {{ type filter hook output priority 0; policy accept; \
                     oifname \"eth0\" numgen random mod 100 < {percent} drop; }}; \
                 }}"
            ),
        );
    }

    /// Removes host `i`'s partition or loss rules.
    pub fn heal(&self, i: usize) {
        self.nft(i, "delete table inet fpn_fault");
    }

    /// Caps what host `i` sends at `rate` (tc syntax, e.g. `10mbit`).
    pub fn bandwidth(&self, i: usize, rate: &str) {
        self.exec(
            i,
            &[
                "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate, "burst",
                "32kbit", "latency", "100ms",
            ],
        );
    }

    /// Routes host `i`'s traffic through a delay line (the `delay-box`
    /// example, in a namespace `fpn-<tag>-d<i>` of its own, between
    /// the host and the bridge): every frame in either direction waits
    /// `delay_ms` plus up to `jitter_ms` (uniform; frames may overtake
    /// each other), and `dup_percent`% are sent twice. The round trip to
    /// any other host grows by `2 × delay_ms`. Segmentation offloads on the
    /// host's `eth0` are turned off so that every frame fits the MTU, and
    /// checksum offload on every host's, so that frames carry real
    /// checksums through the box.
    pub fn delay(&mut self, i: usize, delay_ms: u32, jitter_ms: u32, dup_percent: u32) {
        let host = self.hosts[i].clone();
        let sw = format!("{}sw", self.prefix);
        let boxns = format!("{}d{i}", self.prefix);
        let port = format!("p{i}");
        must(&["ip", "netns", "add", &boxns]);
        // Deleting the switch end deletes the host's eth0 with it.
        must(&["ip", "-n", &sw, "link", "del", &port]);
        must(&[
            "ip", "-n", &boxns, "link", "add", "dly0", "type", "veth", "peer", "name", "eth0",
            "netns", &host.ns,
        ]);
        must(&[
            "ip", "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "dly1", "netns",
            &boxns,
        ]);
        must(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"]);
        for dev in ["dly0", "dly1"] {
            must(&["ip", "-n", &boxns, "link", "set", dev, "up"]);
            // Frames as they are on the wire, never merged.
            let _ = run(&[
                "ip", "netns", "exec", &boxns, "ethtool", "-K", dev, "gro", "off", "tso", "off",
                "gso", "off",
            ]);
        }
        must(&[
            "ip",
            "-n",
            &host.ns,
            "addr",
            "add",
            &format!("{}/16", host.addr),
            "dev",
            "eth0",
        ]);
        must(&["ip", "-n", &host.ns, "link", "set", "eth0", "up"]);
        must(&[
            "ip", "netns", "exec", &host.ns, "ethtool", "-K", "eth0", "tso", "off", "gso", "off",
            "gro", "off",
        ]);
        // Frames reach the box as the sender's kernel left them: with
        // checksum offload, TCP checksums would be filled in by "hardware"
        // that a re-sent frame never meets. Every host computes its own.
        for h in &self.hosts {
            must(&[
                "ip", "netns", "exec", &h.ns, "ethtool", "-K", "eth0", "tx", "off",
            ]);
        }
        let out = Command::new("ip")
            .args(["-n", &host.ns, "-br", "link", "show", "eth0"])
            .output()
            .expect("ip link show");
        let mac = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(2)
            .expect("the MAC of eth0")
            .to_owned();
        let (d, j, p) = (
            (u64::from(delay_ms) * 1000).to_string(),
            (u64::from(jitter_ms) * 1000).to_string(),
            dup_percent.to_string(),
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &boxns, env!("CARGO_BIN_EXE_delay-box")])
            .args(["--a", "dly0", "--b", "dly1", "--host-mac", &mac])
            .args(["--delay-us", &d, "--jitter-us", &j, "--dup-percent", &p])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the delay box: {e}"));
        // Its first line says it forwards; anything else (a traceback, an
        // early exit) fails the test here, with what the box said.
        let mut stderr = std::io::BufReader::new(child.stderr.take().expect("piped"));
        let mut first = String::new();
        let _ = std::io::BufRead::read_line(&mut stderr, &mut first);
        if !first.starts_with("delay-box:") {
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
            let _ = child.kill();
            let _ = child.wait();
            panic!("the delay box did not start: {first}{rest}");
        }
        eprint!("{first}");
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(stderr).map_while(Result::ok) {
                eprintln!("{line}");
            }
        });
        self.children.push(child);
    }

    /// Removes host `i`'s bandwidth cap.
    pub fn unbandwidth(&self, i: usize) {
        self.exec(i, &["tc", "qdisc", "del", "dev", "eth0", "root"]);
    }

    /// Replaces host `i`'s address with `198.18.1.<i+1>`: the host "comes
    /// back with a new address".
    pub fn readdress(&mut self, i: usize) -> Ipv4Addr {
        let ns = self.hosts[i].ns.clone();
        let new = Ipv4Addr::new(198, 18, 1, u8::try_from(i + 1).unwrap());
        must(&["ip", "-n", &ns, "addr", "flush", "dev", "eth0"]);
        must(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{new}/16"),
            "dev",
            "eth0",
        ]);
        self.hosts[i].addr = new;
        new
    }

    /// Sends signal `sig` (`STOP`, `CONT`, ...) to process `pid`.
    pub fn signal(pid: u32, sig: &str) {
        must(&["kill", &format!("-{sig}"), &pid.to_string()]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in namespaces()
            .iter()
            .filter(|ns| ns.starts_with(&self.prefix))
        {
            if let Err(e) = run(&["ip", "netns", "del", ns]) {
                eprintln!("netns: {e}");
            }
        }
    }
}
