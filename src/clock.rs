//! The wall clock, in the one unit the replicated state uses (unix milliseconds).
//!
//! Proposers read the clock and put the time into the command; `apply` never reads it (see
//! `monsys_raft::state_machine`), so a replay stays deterministic.

/// Wall clock in unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_clock_is_after_2024() {
        assert!(super::now_ms() > 1_704_067_200_000);
    }
}
