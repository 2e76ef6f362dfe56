//! The operator's own resource use, read from Linux `/proc`: CPU time
//! (utime + stime of all its threads, `/proc/<pid>/stat`, in clock ticks of
//! `getconf CLK_TCK`) and resident memory (VmRSS, `/proc/<pid>/status`),
//! now and at its peak (VmHWM, the high-water mark since the process started).

/// CPU time the process has used so far, in milliseconds.
pub fn cpu_ms(pid: u32, ticks_per_second: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_ticks(&stat).map(|ticks| ticks as f64 * 1000.0 / ticks_per_second)
}

/// Resident set size of the process, in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    vm_rss_kib(&status).map(|kib| kib as f64 / 1024.0)
}

/// Peak resident set size of the process so far (VmHWM), in MiB.
pub fn rss_peak_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    vm_hwm_kib(&status).map(|kib| kib as f64 / 1024.0)
}

/// Clock ticks per second (`getconf CLK_TCK`), the unit of utime and stime.
pub fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .expect("getconf CLK_TCK prints the clock tick rate")
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts at field 3 (state): utime is field 14, the 12th of rest.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The `VmRSS:` value of a `/proc/<pid>/status` text, in KiB.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    status_kib(status, "VmRSS:")
}

/// The `VmHWM:` value (peak RSS) of a `/proc/<pid>/status` text, in KiB.
pub fn vm_hwm_kib(status: &str) -> Option<u64> {
    status_kib(status, "VmHWM:")
}

fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_skip_a_command_name_with_spaces() {
        let stat = "4242 (sandbox op) erator) S 1 4242 4242 0 -1 4194560 1543 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 1000000 2000 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tsandbox-operator\nVmPeak:\t  900000 kB\nVmRSS:\t   51200 kB\n";
        assert_eq!(vm_rss_kib(status), Some(51200));
        assert_eq!(vm_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn the_peak_is_vm_hwm_not_vm_peak() {
        let status = "VmPeak:\t  900000 kB\nVmHWM:\t   61440 kB\nVmRSS:\t   51200 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(61440));
        assert_eq!(vm_hwm_kib("VmRSS:\t 1 kB\n"), None);
    }

    #[test]
    fn this_process_can_be_measured() {
        let pid = std::process::id();
        let ticks = clock_ticks_per_second();
        assert!(ticks > 0.0);
        assert!(cpu_ms(pid, ticks).is_some());
        assert!(rss_mib(pid).is_some_and(|mib| mib > 0.0));
        assert!(rss_peak_mib(pid).is_some_and(|peak| peak >= rss_mib(pid).unwrap() * 0.5));
    }
}
