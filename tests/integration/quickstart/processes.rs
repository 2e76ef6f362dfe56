//! Reading and signalling processes through /proc, for the quick-start
//! test: a process's parent, group, state and command line, the members of
//! a process group, the operators registering a given webhook port, and
//! a signal to a whole group. Linux only; reads, never writes /proc.

use std::process::{Command, Stdio};

/// Parent pid, process group and state of `pid` from /proc/<pid>/stat.
pub(super) fn stat(pid: u32) -> Option<(u32, u32, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ..."; comm may contain spaces and ')'.
    let mut fields = text.get(text.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((ppid, pgrp, state))
}

/// The command line of `pid`, arguments joined by spaces.
pub(super) fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// Every process (pid, state, command line) whose process group is `pgid`.
pub(super) fn group_members(pgid: u32) -> Vec<(u32, char, String)> {
    processes()
        .filter_map(|pid| {
            let (_, pgrp, state) = stat(pid)?;
            (pgrp == pgid).then(|| (pid, state, cmdline(pid)))
        })
        .collect()
}

fn processes() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .expect("/proc is readable")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
}

/// Operator processes (`sandbox-operator run`) registering the webhook URL
/// `https://127.0.0.1:<webhook_port>`.
pub(super) fn operators_on(webhook_port: u16) -> Vec<(u32, String)> {
    let url = format!("https://127.0.0.1:{webhook_port}");
    processes()
        .filter_map(|pid| {
            let cmd = cmdline(pid);
            let mine = cmd.contains("sandbox-operator")
                && cmd.contains(" run ")
                && cmd.contains("--register-webhook-url")
                && cmd.contains(&url);
            // A zombie has an empty cmdline, so it is not counted here.
            mine.then_some((pid, cmd))
        })
        .collect()
}

/// Sends `signal` (a `kill -s` name) to every process of group `pgid`.
pub(super) fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args(["-s", signal, "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}
