//! Host inventory: OS, kernel, hardware, packages count, systemd units, users, listening ports,
//! containers. Collected at start and every few hours; every list is bounded.

use std::path::Path;

use monsys_proto::agent::{Container, Inventory, ListeningPort, SystemdUnit, UserAccount};

/// Longest list of any kind.
const MAX_LIST: usize = 256;

/// Parses /etc/passwd.
pub fn parse_passwd(text: &str) -> Vec<UserAccount> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(UserAccount {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                shell: f.get(6)?.to_string(),
            })
        })
        .take(MAX_LIST)
        .collect()
}

/// Parses `KEY="value"` lines of /etc/os-release.
pub fn parse_os_release(text: &str) -> (String, String) {
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    (get("NAME"), get("VERSION_ID"))
}

/// Parses `systemctl list-units --all --no-legend --plain` output.
pub fn parse_systemctl(text: &str) -> Vec<SystemdUnit> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(SystemdUnit {
                name: f.first()?.to_string(),
                active_state: f.get(2)?.to_string(),
                sub_state: f.get(3)?.to_string(),
            })
        })
        .take(MAX_LIST)
        .collect()
}

/// Parses /proc/net/{tcp,tcp6,udp,udp6}: listening TCP sockets and bound UDP sockets.
pub fn parse_net_sockets(text: &str, proto: &str) -> Vec<ListeningPort> {
    let tcp = proto.starts_with("tcp");
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, state) = (*f.get(1)?, *f.get(3)?);
            if (tcp && state != "0A") || (!tcp && state != "07") {
                return None;
            }
            let (addr_hex, port_hex) = local.split_once(':')?;
            Some(ListeningPort {
                proto: proto.into(),
                addr: hex_addr(addr_hex),
                port: u16::from_str_radix(port_hex, 16).ok()?,
                process: None,
            })
        })
        .collect()
}

fn hex_addr(h: &str) -> String {
    let bytes: Vec<u8> =
        (0..h.len() / 2).filter_map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok()).collect();
    match bytes.len() {
        4 => std::net::Ipv4Addr::new(bytes[3], bytes[2], bytes[1], bytes[0]).to_string(),
        16 => {
            let mut b = [0u8; 16];
            for w in 0..4 {
                for i in 0..4 {
                    b[w * 4 + i] = bytes[w * 4 + 3 - i];
                }
            }
            std::net::Ipv6Addr::from(b).to_string()
        }
        _ => h.to_string(),
    }
}

/// Counts installed packages in a dpkg status file.
pub fn count_dpkg(text: &str) -> u64 {
    text.split("\n\n").filter(|stanza| stanza.lines().any(|l| l == "Status: install ok installed")).count()
        as u64
}

/// Lists containers through the Docker socket (`GET /containers/json?all=1`).
async fn containers(socket: &Path) -> Vec<Container> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(Ok(mut s)) =
        tokio::time::timeout(std::time::Duration::from_secs(2), tokio::net::UnixStream::connect(socket))
            .await
    else {
        return vec![];
    };
    let req = b"GET /containers/json?all=1 HTTP/1.0\r\nHost: docker\r\n\r\n";
    let mut buf = Vec::new();
    let read = async {
        s.write_all(req).await?;
        s.take(4 * 1024 * 1024).read_to_end(&mut buf).await
    };
    if tokio::time::timeout(std::time::Duration::from_secs(5), read).await.is_err() {
        return vec![];
    }
    let text = String::from_utf8_lossy(&buf);
    let Some((_, body)) = text.split_once("\r\n\r\n") else { return vec![] };
    let Ok(list) = serde_json::from_str::<Vec<serde_json::Value>>(body) else { return vec![] };
    list.iter()
        .take(MAX_LIST)
        .map(|c| Container {
            id: c["Id"].as_str().unwrap_or_default().chars().take(12).collect(),
            name: c["Names"][0].as_str().unwrap_or_default().trim_start_matches('/').to_string(),
            image: c["Image"].as_str().unwrap_or_default().to_string(),
            state: c["State"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

/// Collects the inventory of this host.
pub async fn collect() -> Inventory {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let (os_name, os_version) = parse_os_release(&read("/etc/os-release"));
    let meminfo = crate::collect::parse_meminfo(&read("/proc/meminfo"));
    let mut ports = Vec::new();
    for proto in ["tcp", "tcp6", "udp", "udp6"] {
        ports.extend(parse_net_sockets(&read(&format!("/proc/net/{proto}")), proto));
    }
    ports.truncate(MAX_LIST);
    let systemd_units = match tokio::process::Command::new("systemctl")
        .args(["list-units", "--all", "--no-legend", "--plain", "--no-pager"])
        .output()
        .await
    {
        Ok(out) if out.status.success() => parse_systemctl(&String::from_utf8_lossy(&out.stdout)),
        _ => vec![],
    };
    let dpkg = read("/var/lib/dpkg/status");
    let docker = Path::new("/var/run/docker.sock");
    Inventory {
        os_name,
        os_version,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        arch: std::env::consts::ARCH.to_string(),
        cpu_cores: std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
        mem_total_bytes: meminfo.get("MemTotal").copied().unwrap_or(0) * 1024,
        packages_count: (!dpkg.is_empty()).then(|| count_dpkg(&dpkg)),
        systemd_units,
        users: parse_passwd(&read("/etc/passwd")),
        listening_ports: ports,
        containers: if docker.exists() { containers(docker).await } else { vec![] },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_read_fixtures() {
        assert_eq!(parse_passwd("root:x:0:0:root:/root:/bin/bash\n# c\nbad\n").len(), 1);
        assert_eq!(
            parse_os_release("NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\n"),
            ("Debian GNU/Linux".into(), "12".into())
        );
        let units = parse_systemctl("nginx.service loaded active running A high performance web server\n");
        assert_eq!((units[0].name.as_str(), units[0].sub_state.as_str()), ("nginx.service", "running"));
        let tcp = "  sl  local_address rem_address   st\n   0: 0100007F:1F90 00000000:0000 0A 0\n   1: 0100007F:C350 0100007F:1F90 01 0\n";
        let ports = parse_net_sockets(tcp, "tcp");
        assert_eq!(ports.len(), 1);
        assert_eq!((ports[0].addr.as_str(), ports[0].port), ("127.0.0.1", 8080));
        assert_eq!(
            count_dpkg(
                "Package: a\nStatus: install ok installed\n\nPackage: b\nStatus: deinstall ok config-files\n"
            ),
            1
        );
    }

    #[tokio::test]
    async fn this_machine_has_an_inventory() {
        let inv = collect().await;
        assert!(!inv.kernel.is_empty() && inv.cpu_cores >= 1 && inv.mem_total_bytes > 0, "{inv:?}");
        assert!(inv.users.iter().any(|u| u.uid == 0));
    }
}
