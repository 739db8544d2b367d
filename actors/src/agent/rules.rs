//! Threshold rule evaluation for one agent: pure state, driven batch by batch.
//!
//! A rule fires when its metric is above the threshold in `for_samples` consecutive batches
//! and clears as soon as one batch is at or below it. For labelled metrics (per core, per
//! mount) the highest value across labels counts. A batch without the metric leaves the rule's
//! count as it is. The counts live only in the owner's actor: after a hand-off a breach has to
//! be seen `for_samples` times again before firing, and the state machine de-duplicates a
//! firing of a rule that is already open, so a hand-off never fires an alert twice.

use std::collections::BTreeMap;

use monsys_proto::agent::{Sample, Severity};

/// A threshold rule as the actor sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSpec {
    /// Rule id.
    pub id: String,
    /// Metric name.
    pub metric: String,
    /// Fires above this.
    pub threshold: f64,
    /// Consecutive breaching batches needed.
    pub for_samples: u32,
    /// Severity.
    pub severity: Severity,
}

/// A rule to fire.
#[derive(Debug, Clone, PartialEq)]
pub struct Fire {
    /// Rule id.
    pub rule_id: String,
    /// Severity.
    pub severity: Severity,
    /// Human message.
    pub message: String,
    /// Observed value.
    pub value: f64,
}

/// Decisions for one batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decisions {
    /// Rules breached long enough: fire (the state machine de-duplicates open ones).
    pub fire: Vec<Fire>,
    /// Rules clear in this batch: resolve if open.
    pub clear: Vec<String>,
    /// Breach counts to keep if the batch is stored.
    pub next: BTreeMap<String, u32>,
}

/// Consecutive breach counts per rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleState {
    breaches: BTreeMap<String, u32>,
}

impl RuleState {
    /// Evaluates `rules` on one batch; nothing changes until [`RuleState::commit`].
    pub fn evaluate(&self, rules: &[RuleSpec], samples: &[Sample]) -> Decisions {
        let mut d = Decisions::default();
        for rule in rules {
            let value = samples
                .iter()
                .filter(|s| s.name == rule.metric && s.value.is_finite())
                .map(|s| s.value)
                .reduce(f64::max);
            let before = self.breaches.get(&rule.id).copied().unwrap_or(0);
            match value {
                None => {
                    if before > 0 {
                        d.next.insert(rule.id.clone(), before);
                    }
                }
                Some(v) if v > rule.threshold => {
                    let count = before.saturating_add(1);
                    d.next.insert(rule.id.clone(), count);
                    if count >= rule.for_samples {
                        d.fire.push(Fire {
                            rule_id: rule.id.clone(),
                            severity: rule.severity,
                            message: format!(
                                "{} is {v:.1}, above {} ({} batches)",
                                rule.metric, rule.threshold, count
                            ),
                            value: v,
                        });
                    }
                }
                Some(_) => d.clear.push(rule.id.clone()),
            }
        }
        d
    }

    /// Keeps the counts of a stored batch.
    pub fn commit(&mut self, d: &Decisions) {
        self.breaches = d.next.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(for_samples: u32) -> RuleSpec {
        RuleSpec {
            id: "disk".into(),
            metric: "disk_percent".into(),
            threshold: 90.0,
            for_samples,
            severity: Severity::Critical,
        }
    }

    fn disks(a: f64, b: f64) -> Vec<Sample> {
        vec![
            Sample::labelled("disk_percent", "mount", "/", a),
            Sample::labelled("disk_percent", "mount", "/var", b),
        ]
    }

    #[test]
    fn fires_after_consecutive_breaches_and_clears_at_once() {
        let mut s = RuleState::default();
        let rules = [rule(2)];
        let d = s.evaluate(&rules, &disks(50.0, 95.0));
        assert!(d.fire.is_empty() && d.clear.is_empty());
        s.commit(&d);
        // a batch without the metric keeps the count
        let d = s.evaluate(&rules, &[Sample::new("load1", 1.0)]);
        s.commit(&d);
        let d = s.evaluate(&rules, &disks(96.0, 10.0));
        assert_eq!(d.fire.len(), 1);
        assert_eq!(d.fire[0].value, 96.0);
        s.commit(&d);
        let d = s.evaluate(&rules, &disks(10.0, 10.0));
        assert_eq!(d.clear, vec!["disk".to_string()]);
        s.commit(&d);
        assert!(s.evaluate(&rules, &disks(95.0, 1.0)).fire.is_empty(), "count restarted");
    }

    #[test]
    fn uncommitted_evaluations_change_nothing() {
        let s = RuleState::default();
        let rules = [rule(1)];
        assert_eq!(s.evaluate(&rules, &disks(99.0, 0.0)).fire.len(), 1);
        assert_eq!(s, RuleState::default());
    }
}
