//! Reading the unrolling's records (paper.md, metric 6): the step size several seeds agree
//! on, a series per step, the groups' shares of a mean, and the train loss beside its first
//! order — for claim C6, Fig. 7, the CLI and the dashboard alike.

use crate::{AnalysisRecord, Group, MetricName, Split};
use std::collections::BTreeMap;

/// The unrolling step size of a configuration analysed over several seeds, each of which
/// selected its own by paper.md's rule: the α most seeds selected, a tie going to the lower
/// train loss after the last step, averaged over the seeds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SeedsAlpha {
    pub alpha: f64,
    /// Seeds that selected `alpha`, of `seeds` that selected one.
    pub votes: usize,
    pub seeds: usize,
}

impl SeedsAlpha {
    /// Each seed's records and selected α; None when no seed selected one.
    pub fn of<'a>(
        seeds: impl IntoIterator<Item = (&'a [AnalysisRecord], Option<f64>)>,
    ) -> Option<Self> {
        let seeds: Vec<_> = seeds.into_iter().collect();
        let mut votes: Vec<(f64, usize)> = vec![];
        for alpha in seeds.iter().filter_map(|s| s.1) {
            match votes.iter_mut().find(|v| v.0 == alpha) {
                Some(v) => v.1 += 1,
                None => votes.push((alpha, 1)),
            }
        }
        let most = votes.iter().map(|v| v.1).max()?;
        let final_loss = |alpha: f64| {
            let losses: Vec<f64> = seeds
                .iter()
                .filter_map(|(records, _)| final_train_loss(records, alpha))
                .collect();
            crate::stats::mean(&losses)
        };
        let alpha = votes
            .iter()
            .filter(|v| v.1 == most)
            .map(|v| (v.0, final_loss(v.0)))
            .min_by(|a, b| a.1.total_cmp(&b.1))?
            .0;
        Some(Self {
            alpha,
            votes: most,
            seeds: votes.iter().map(|v| v.1).sum(),
        })
    }

    /// `α = 0.1 (selected)`, with how many seeds selected it where not all did.
    pub fn describe(&self) -> String {
        if self.votes == self.seeds {
            format!("α = {} (selected)", self.alpha)
        } else {
            format!(
                "α = {} (selected by {} of {} seeds)",
                self.alpha, self.votes, self.seeds
            )
        }
    }
}

/// Per step, in order, the mean over `records` (one seed's, or several seeds' together) of one
/// unrolling series at step size `alpha`.
pub fn unroll_means<'a>(
    records: impl IntoIterator<Item = &'a AnalysisRecord>,
    name: MetricName,
    group: Group,
    split: Split,
    alpha: f64,
) -> Vec<f64> {
    let mut steps: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    for r in records {
        if r.name == name && r.group == Some(group) && r.split == split && r.alpha == Some(alpha) {
            if let Some(step) = r.step {
                steps.entry(step).or_default().push(r.value);
            }
        }
    }
    steps
        .into_values()
        .map(|v: Vec<f64>| crate::stats::mean(&v))
        .collect()
}

/// The groups that partition all examples, in the order their shares are told.
const SHARE_GROUPS: [Group; 3] = [Group::Misclassified, Group::Borderline, Group::Correct];

/// Per step, each group's share of an unrolling series' mean over all examples at step size
/// `alpha`: the sum over the group's records of value·n over the sum of the all-examples
/// records' n, so that several seeds' records pool their examples. Misclassified, borderline
/// and correct examples partition all of them, so the shares add up to the mean. Groups
/// without records are left out.
pub fn unroll_shares<'a>(
    records: impl IntoIterator<Item = &'a AnalysisRecord>,
    name: MetricName,
    split: Split,
    alpha: f64,
) -> Vec<(Group, BTreeMap<u32, f64>)> {
    let mut sums: BTreeMap<(Group, u32), f64> = BTreeMap::new();
    let mut examples: BTreeMap<u32, f64> = BTreeMap::new();
    for r in records {
        if r.name != name || r.split != split || r.alpha != Some(alpha) {
            continue;
        }
        let (Some(group), Some(step)) = (r.group, r.step) else {
            continue;
        };
        if group == Group::All {
            *examples.entry(step).or_default() += r.n as f64;
        } else {
            *sums.entry((group, step)).or_default() += r.value * r.n as f64;
        }
    }
    SHARE_GROUPS
        .into_iter()
        .map(|group| {
            let shares: BTreeMap<u32, f64> = sums
                .range((group, 0)..=(group, u32::MAX))
                .filter_map(|(&(_, step), sum)| Some((step, sum / examples.get(&step)?)))
                .collect();
            (group, shares)
        })
        .filter(|(_, shares)| !shares.is_empty())
        .collect()
}

/// The train loss before and after unrolling at `alpha` and, where recorded, the sum of its
/// first-order predictions over the steps, with each group's share of that sum:
/// `train loss 0.397 → 0.766 (first order +0.512: misclassified +2.051, borderline +0.040,
/// correct −1.579)`. Set side by side, a prediction that rises with the loss while the mean
/// cosine is negative says examples with large gradients point uphill, and the shares say
/// which; one that falls while the loss rises says the steps are too long for the first
/// order. None without train-loss records.
pub fn unroll_train_loss<'a>(
    records: impl IntoIterator<Item = &'a AnalysisRecord> + Clone,
    alpha: f64,
) -> Option<String> {
    let train = |name| unroll_means(records.clone(), name, Group::All, Split::Train, alpha);
    let [first, .., last] = train(MetricName::UnrollLoss)[..] else {
        return None;
    };
    let first_order = match train(MetricName::UnrollFirstOrder)[..] {
        [] => String::new(),
        ref steps => {
            let shares: Vec<String> =
                unroll_shares(records, MetricName::UnrollFirstOrder, Split::Train, alpha)
                    .into_iter()
                    .map(|(group, per_step)| {
                        format!("{} {:+.3}", group.as_str(), per_step.values().sum::<f64>())
                    })
                    .collect();
            let shares = match &shares[..] {
                [] => String::new(),
                _ => format!(": {}", shares.join(", ")),
            };
            format!(" (first order {:+.3}{shares})", steps.iter().sum::<f64>())
        }
    };
    Some(format!("train loss {first:.3} → {last:.3}{first_order}"))
}

/// The train loss of all examples after the last unrolling step at `alpha`.
fn final_train_loss(records: &[AnalysisRecord], alpha: f64) -> Option<f64> {
    let losses = unroll_means(
        records,
        MetricName::UnrollLoss,
        Group::All,
        Split::Train,
        alpha,
    );
    losses.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_shares_pool_the_seeds_examples_and_add_up_to_the_mean() {
        let at = |group, alpha, step, value, n| {
            AnalysisRecord::new(MetricName::UnrollFirstOrder, Split::Train, 1, value, n)
                .with_group(group)
                .at_step(alpha, step)
        };
        use Group::{All, Correct, Misclassified};
        let records = [
            // One seed: 2 misclassified and 8 correct of 10 examples, two steps.
            at(All, 0.1, 0, 0.12, 10),
            at(Misclassified, 0.1, 0, 1.0, 2),
            at(Correct, 0.1, 0, -0.1, 8),
            at(All, 0.1, 1, 0.5, 10),
            at(Misclassified, 0.1, 1, 2.0, 2),
            at(Correct, 0.1, 1, 0.125, 8),
            // Another: 3 misclassified and 27 correct of 30, its first step only.
            at(All, 0.1, 0, 0.02, 30),
            at(Misclassified, 0.1, 0, 2.0, 3),
            at(Correct, 0.1, 0, -0.2, 27),
            // Another step size, and the test split: not counted.
            at(Misclassified, 0.5, 0, 9.0, 2),
            AnalysisRecord::new(MetricName::UnrollFirstOrder, Split::Test, 1, 9.0, 2)
                .with_group(Misclassified)
                .at_step(0.1, 0),
        ];
        let shares = unroll_shares(&records, MetricName::UnrollFirstOrder, Split::Train, 0.1);
        let groups: Vec<Group> = shares.iter().map(|(g, _)| *g).collect();
        assert_eq!(groups, [Misclassified, Correct], "no borderline records");
        let share = |i: usize, step| shares[i].1[&step];
        // Step 0 pools 40 examples: (2·1.0 + 3·2.0) / 40 and (8·−0.1 + 27·−0.2) / 40.
        assert!((share(0, 0) - 0.2).abs() < 1e-12, "{shares:?}");
        assert!((share(1, 0) + 0.155).abs() < 1e-12, "{shares:?}");
        // They add up to the pooled mean, (10·0.12 + 30·0.02) / 40.
        assert!((share(0, 0) + share(1, 0) - 0.045).abs() < 1e-12);
        assert!((share(0, 1) - 0.4).abs() < 1e-12 && (share(1, 1) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn seeds_agree_on_the_step_size_most_of_them_selected() {
        let unrolled = |alpha, loss| {
            [0, 20].map(|step| {
                AnalysisRecord::new(MetricName::UnrollLoss, Split::Train, 1, loss, 10)
                    .with_group(Group::All)
                    .at_step(alpha, step)
            })
        };
        let seed = |losses: [(f64, f64); 2]| {
            losses
                .into_iter()
                .flat_map(|(a, l)| unrolled(a, l))
                .collect::<Vec<_>>()
        };
        let (a, b, c) = (
            seed([(0.1, 0.5), (0.05, 0.6)]),
            seed([(0.1, 0.9), (0.05, 0.4)]),
            seed([(0.1, 0.2), (0.05, 0.3)]),
        );
        let of = |selected: &[(&Vec<AnalysisRecord>, Option<f64>)]| {
            SeedsAlpha::of(selected.iter().map(|(r, s)| (&r[..], *s)))
        };
        // Two of three seeds chose 0.1.
        let chosen = of(&[(&a, Some(0.1)), (&b, Some(0.05)), (&c, Some(0.1))]).unwrap();
        assert_eq!((chosen.alpha, chosen.votes, chosen.seeds), (0.1, 2, 3));
        assert_eq!(chosen.describe(), "α = 0.1 (selected by 2 of 3 seeds)");
        // A tie goes to the lower mean final train loss: 0.05's (0.6 + 0.4) / 2 < 0.1's 0.7.
        let tied = of(&[(&a, Some(0.1)), (&b, Some(0.05))]).unwrap();
        assert_eq!((tied.alpha, tied.votes, tied.seeds), (0.05, 1, 2));
        let one = of(&[(&a, Some(0.1)), (&b, None)]).unwrap();
        assert_eq!(one.describe(), "α = 0.1 (selected)");
        assert_eq!(of(&[(&a, None)]), None);
    }
}
