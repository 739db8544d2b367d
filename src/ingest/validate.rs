//! Validation of an agent's batch against the wire limits (`monsys_proto::agent`), done on the
//! owner before the actor sees it. Every failed check is reported, with its field path.

use monsys_proto::agent::{self as wire, IngestBatch};

use super::error::IngestError;

fn name_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Which samples repeat the series of an earlier sample of the batch (`series[i]` is the key
/// of sample `i`).
fn repeated_series(series: &[String]) -> Vec<bool> {
    let mut order: Vec<usize> = (0..series.len()).collect();
    order.sort_unstable_by(|a, b| series[*a].cmp(&series[*b]).then(a.cmp(b)));
    let mut repeated = vec![false; series.len()];
    for pair in order.windows(2) {
        if series[pair[0]] == series[pair[1]] {
            repeated[pair[1]] = true;
        }
    }
    repeated
}

/// Checks a batch of `agent_id` against the wire limits (`series[i]` is the key of sample `i`).
pub fn batch(b: &IngestBatch, series: &[String], agent_id: &str) -> Result<(), IngestError> {
    let mut fields = Vec::new();
    // the field name is built only for a failed check: this runs for every sample of every batch
    let mut check = |ok: bool, field: &dyn Fn() -> String, message: &str| {
        if !ok {
            fields.push(monsys_proto::settings::FieldError { field: field(), message: message.into() });
        }
    };
    if b.agent_id != agent_id {
        return Err(IngestError::WrongAgent);
    }
    check(b.seq >= 1, &|| "seq".into(), "must be at least 1");
    // A collection time far in the future (an agent's clock running fast) refuses nothing
    // here: the batch is stored and its samples are refused and counted by the state machine
    // (`samples_refused` of the agent); refusing the batch would make the agent drop it.
    check(b.agent_version.chars().count() <= 64, &|| "agent_version".into(), "at most 64 characters");
    check(b.metrics.len() <= wire::MAX_SAMPLES_PER_BATCH, &|| "metrics".into(), "too many samples");
    check(
        b.processes.as_ref().is_none_or(|p| p.len() <= wire::MAX_PROCESSES),
        &|| "processes".into(),
        "too many processes",
    );
    check(b.alerts.len() <= wire::MAX_AGENT_ALERTS, &|| "alerts".into(), "too many alerts");
    let repeated = repeated_series(series);
    for (i, s) in b.metrics.iter().enumerate() {
        check(!repeated[i], &|| format!("metrics[{i}]"), "series repeated in the batch");
        check(name_ok(&s.name, 64), &|| format!("metrics[{i}].name"), "1-64 characters of [a-z0-9_]");
        check(s.value.is_finite(), &|| format!("metrics[{i}].value"), "must be finite");
        check(s.labels.len() <= 8, &|| format!("metrics[{i}].labels"), "at most 8 labels");
        for (k, v) in &s.labels {
            check(
                name_ok(k, 32) && v.len() <= 128,
                &|| format!("metrics[{i}].labels.{k}"),
                "key [a-z0-9_] ≤ 32, value ≤ 128 bytes",
            );
        }
    }
    for (i, a) in b.alerts.iter().enumerate() {
        check(
            !a.key.is_empty()
                && a.key.len() <= 64
                && a.key.bytes().all(|c| c.is_ascii_alphanumeric() || b"_.:-".contains(&c)),
            &|| format!("alerts[{i}].key"),
            "1-64 characters of [A-Za-z0-9_.:-]",
        );
        check(a.message.len() <= 512, &|| format!("alerts[{i}].message"), "at most 512 bytes");
    }
    if fields.is_empty() { Ok(()) } else { Err(IngestError::Validation(fields)) }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_later_copies_of_a_series_count_as_repeated() {
        let keys: Vec<String> = ["b", "a", "b", "c", "a", "b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(repeated_series(&keys), [false, false, true, false, true, true]);
        assert!(repeated_series(&[]).is_empty());
    }
}
