//! Rolling batches and the failure budget: how a run is cut into batches, and how many failures
//! it may take before the rollout stops.
//!
//! `--batch` sizes are a number of hosts (`25`), a percentage of all the targets (`10%`, rounded
//! up, at least one host) or a list of them whose last element repeats (`1,10%,50%`: one canary
//! host, then 10% of the fleet, then half the fleet at a time). `--max-failures` is a number or a
//! percentage of the targets (rounded down); the run may take that many failed hosts, and one
//! more stops it. Everything here is arithmetic on host counts; the scheduler applies it.

use std::ops::Range;
use std::time::Duration;

use volley_common::duration::parse_duration;

use crate::cli::RolloutArgs;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RolloutError {
    #[error("--batch '{input}': {reason}")]
    Batch { input: String, reason: String },
    #[error("--batch-delay: {0}")]
    Delay(String),
    #[error("--max-failures '{input}': {reason}")]
    Budget { input: String, reason: String },
}

/// A count of hosts, absolute or relative to the number of targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Share {
    Hosts(usize),
    /// 0 to 100.
    Percent(u8),
}

impl Share {
    /// `25` or `10%`; the reason it is not one of those otherwise.
    fn parse(text: &str) -> Result<Share, String> {
        let text = text.trim();
        let not_a_share =
            || format!("'{text}' is not a number of hosts (25) or a percentage (10%)");
        match text.strip_suffix('%') {
            Some(number) => match number.parse::<u8>() {
                Ok(percent) if percent <= 100 => Ok(Share::Percent(percent)),
                Ok(_) => Err(format!("'{text}' is more than 100%")),
                Err(_) => Err(not_a_share()),
            },
            None => text.parse().map(Share::Hosts).map_err(|_| not_a_share()),
        }
    }
}

/// The batch sizes of `--batch`, in order; the last one repeats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSizes {
    sizes: Vec<Share>,
    /// As given, for the journal.
    pub text: String,
}

impl BatchSizes {
    pub fn parse(input: &str) -> Result<BatchSizes, RolloutError> {
        let error = |reason: String| RolloutError::Batch {
            input: input.to_string(),
            reason,
        };
        let mut sizes = Vec::new();
        for element in input.split(',') {
            if element.trim().is_empty() {
                return Err(error("a batch size is missing".to_string()));
            }
            let share = Share::parse(element).map_err(error)?;
            if matches!(share, Share::Hosts(0) | Share::Percent(0)) {
                return Err(error("a batch must hold at least one host".to_string()));
            }
            sizes.push(share);
        }
        Ok(BatchSizes {
            sizes,
            text: input.to_string(),
        })
    }

    /// Cuts `total` hosts into consecutive batches.
    pub fn split(&self, total: usize) -> Vec<Range<usize>> {
        let mut batches = Vec::new();
        let mut start = 0;
        let mut sizes = self.sizes.iter();
        let mut size = 1;
        while start < total {
            if let Some(share) = sizes.next() {
                size = match *share {
                    Share::Hosts(hosts) => hosts,
                    Share::Percent(percent) => (total * usize::from(percent)).div_ceil(100),
                }
                .max(1);
            }
            let end = start.saturating_add(size).min(total);
            batches.push(start..end);
            start = end;
        }
        batches
    }
}

/// `--max-failures`: how many failed hosts the run may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureBudget {
    share: Share,
    /// As given, for the journal (`0` for `--abort-on-failure`).
    pub text: String,
}

impl FailureBudget {
    pub fn parse(input: &str) -> Result<FailureBudget, RolloutError> {
        let share = Share::parse(input).map_err(|reason| RolloutError::Budget {
            input: input.to_string(),
            reason,
        })?;
        Ok(FailureBudget {
            share,
            text: input.trim().to_string(),
        })
    }

    /// The failures allowed in a run of `total` hosts: one more stops it.
    pub fn allowed(&self, total: usize) -> usize {
        match self.share {
            Share::Hosts(hosts) => hosts,
            Share::Percent(percent) => total * usize::from(percent) / 100,
        }
    }
}

/// How a run rolls out: its batches, the pause between them, the failure budget and the
/// retries of connect-phase failures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RolloutPlan {
    /// `None`: one batch of every host, and no batch lines in the output.
    pub batches: Option<BatchSizes>,
    pub delay: Duration,
    /// `None`: no budget, every host runs whatever happens.
    pub budget: Option<FailureBudget>,
    pub retries: u32,
}

impl RolloutPlan {
    pub fn from_args(args: &RolloutArgs) -> Result<RolloutPlan, RolloutError> {
        let batches = args.batch.as_deref().map(BatchSizes::parse).transpose()?;
        let delay = match &args.batch_delay {
            // A delay without batches would be silently ignored: say so instead.
            Some(_) if batches.is_none() => {
                return Err(RolloutError::Delay(
                    "there is nothing to wait between without --batch".to_string(),
                ));
            }
            Some(text) => parse_duration(text).map_err(|e| RolloutError::Delay(e.to_string()))?,
            None => Duration::ZERO,
        };
        let budget = if args.abort_on_failure {
            Some(FailureBudget::parse("0")?)
        } else {
            args.max_failures
                .as_deref()
                .map(FailureBudget::parse)
                .transpose()?
        };
        Ok(RolloutPlan {
            batches,
            delay,
            budget,
            retries: args.retries.unwrap_or(0),
        })
    }

    /// Whether the operator asked for batches, so they are announced.
    pub fn is_batched(&self) -> bool {
        self.batches.is_some()
    }

    /// The batches of a run of `total` hosts: consecutive ranges of host numbers.
    pub fn batches(&self, total: usize) -> Vec<Range<usize>> {
        match &self.batches {
            Some(sizes) => sizes.split(total),
            None if total == 0 => Vec::new(),
            None => std::iter::once(0..total).collect(),
        }
    }

    /// The failures a run of `total` hosts may take; `None` without a budget.
    pub fn allowed_failures(&self, total: usize) -> Option<usize> {
        self.budget.as_ref().map(|budget| budget.allowed(total))
    }
}

/// The batch (counted from 1) that host number `host` belongs to.
pub fn batch_of(batches: &[Range<usize>], host: usize) -> usize {
    batches
        .iter()
        .position(|batch| batch.contains(&host))
        .map_or(1, |index| index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_split(input: &str, total: usize, expected: &[usize]) {
        let sizes = BatchSizes::parse(input).unwrap();
        let batches = sizes.split(total);
        let lengths: Vec<usize> = batches.iter().map(Range::len).collect();
        assert_eq!(lengths, expected, "--batch {input} over {total} hosts");
        // The batches are consecutive and cover every host once.
        let mut next = 0;
        for batch in &batches {
            assert_eq!(batch.start, next, "--batch {input}: {batches:?}");
            next = batch.end;
        }
        assert_eq!(next, total);
    }

    #[test]
    fn batches_split_the_hosts() {
        check_split("25", 100, &[25, 25, 25, 25]);
        check_split("25", 60, &[25, 25, 10]);
        check_split("25", 3, &[3]);
        check_split("1", 3, &[1, 1, 1]);
        check_split("10%", 100, &[10; 10]);
        // Percentages are of all the targets, rounded up, so a small fleet still moves.
        check_split("10%", 5, &[1, 1, 1, 1, 1]);
        check_split("30%", 10, &[3, 3, 3, 1]);
        check_split("100%", 7, &[7]);
        check_split("1,10%,50%", 100, &[1, 10, 50, 39]);
        check_split("1,10%,50%", 20, &[1, 2, 10, 7]);
        check_split("2,3", 8, &[2, 3, 3]);
        check_split(" 1 , 2 ", 6, &[1, 2, 2, 1]);
        // A list longer than needed stops when the hosts run out.
        check_split("5,5,5,5", 7, &[5, 2]);
        check_split("25", 0, &[]);
    }

    fn check_batch_error(input: &str, expected: &str) {
        assert_eq!(
            BatchSizes::parse(input).map_err(|e| e.to_string()),
            Err(expected.to_string()),
            "--batch {input}"
        );
    }

    #[test]
    fn bad_batch_sizes_are_named() {
        check_batch_error("0", "--batch '0': a batch must hold at least one host");
        check_batch_error("0%", "--batch '0%': a batch must hold at least one host");
        check_batch_error(
            "10x",
            "--batch '10x': '10x' is not a number of hosts (25) or a percentage (10%)",
        );
        check_batch_error("150%", "--batch '150%': '150%' is more than 100%");
        check_batch_error("1,,5", "--batch '1,,5': a batch size is missing");
        check_batch_error("", "--batch '': a batch size is missing");
        check_batch_error(
            "-1",
            "--batch '-1': '-1' is not a number of hosts (25) or a percentage (10%)",
        );
        check_batch_error(
            "2.5%",
            "--batch '2.5%': '2.5%' is not a number of hosts (25) or a percentage (10%)",
        );
    }

    #[test]
    fn the_budget_allows_so_many_failures() {
        let check = |input: &str, total: usize, expected: usize| {
            let budget = FailureBudget::parse(input).unwrap();
            assert_eq!(
                budget.allowed(total),
                expected,
                "--max-failures {input} of {total}"
            );
        };
        check("0", 100, 0);
        check("2", 100, 2);
        check("2", 1, 2);
        // Percentages round down: 10% of 25 hosts allows 2 failures, and the third stops.
        check("10%", 25, 2);
        check("10%", 9, 0);
        check("10%", 10, 1);
        check("0%", 1000, 0);
        check("100%", 7, 7);
        assert_eq!(
            FailureBudget::parse("abc").map_err(|e| e.to_string()),
            Err(
                "--max-failures 'abc': 'abc' is not a number of hosts (25) or a percentage (10%)"
                    .to_string()
            )
        );
    }

    fn args(batch: Option<&str>, max_failures: Option<&str>, abort: bool) -> RolloutArgs {
        RolloutArgs {
            batch: batch.map(str::to_string),
            batch_delay: Some("1.5s".to_string()),
            max_failures: max_failures.map(str::to_string),
            abort_on_failure: abort,
            retries: None,
        }
    }

    #[test]
    fn a_plan_without_batches_is_one_batch() {
        let mut without = args(None, None, false);
        assert_eq!(
            RolloutPlan::from_args(&without).map_err(|e| e.to_string()),
            Err("--batch-delay: there is nothing to wait between without --batch".to_string())
        );
        without.batch_delay = None;
        let plan = RolloutPlan::from_args(&without).unwrap();
        assert!(!plan.is_batched());
        let every_host: Range<usize> = 0..5;
        assert_eq!(plan.batches(5), vec![every_host]);
        assert_eq!(plan.batches(0), Vec::<Range<usize>>::new());
        assert_eq!(plan.allowed_failures(5), None);
        assert_eq!(plan.delay, Duration::ZERO);
        assert_eq!(plan.retries, 0);
    }

    #[test]
    fn abort_on_failure_is_a_budget_of_zero() {
        let plan = RolloutPlan::from_args(&args(Some("2"), None, true)).unwrap();
        assert_eq!(plan.delay, Duration::from_millis(1500));
        assert_eq!(plan.allowed_failures(100), Some(0));
        assert_eq!(plan.batches(5), [0..2, 2..4, 4..5]);
        let plan = RolloutPlan::from_args(&args(Some("2"), Some("20%"), false)).unwrap();
        assert_eq!(plan.allowed_failures(100), Some(20));
    }

    #[test]
    fn hosts_belong_to_their_batch() {
        let batches = BatchSizes::parse("1,2").unwrap().split(6);
        let numbers: Vec<usize> = (0..6).map(|host| batch_of(&batches, host)).collect();
        assert_eq!(numbers, [1, 2, 2, 3, 3, 4]);
    }
}
