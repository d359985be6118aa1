//! Process limits a busy service needs.
//!
//! A webhook worker holds a socket per send in flight, plus PostgreSQL's and NATS's, and
//! many systems start services with a soft limit of 1,024 open files (systemd's default)
//! while allowing far more. Rust's standard library leaves the limit as it found it, so the
//! worker raises it itself, as far as the hard limit allows.

/// Raises this process's soft limit on open files to its hard limit, and returns the soft
/// limit now in force.
pub fn raise_open_files() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_limit() {
        let (before, _) = rlimit::Resource::NOFILE.get().unwrap();
        let raised = raise_open_files().unwrap();
        let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
        assert_eq!(raised, soft, "the limit now in force");
        assert!(soft >= before, "never lowered: {before} -> {soft}");
        if hard != rlimit::INFINITY {
            assert_eq!(soft, hard, "raised as far as the hard limit allows");
        }
    }
}
