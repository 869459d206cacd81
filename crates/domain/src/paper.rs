//! paper.md's Table 1 beside measured values: the paper's parameter counts and errors for
//! models of its own shape, and one row per configuration of an experiment (the CLI's
//! report, the API's and the dashboard's comparison with the paper).

use crate::claims::Config;
use crate::{MetricName, ModelSpec, Precision, Sharing, Split};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What paper.md gives for a model: trainable parameters, and train / test error in [0, 1]
/// on CIFAR-10 or CIFAR-100.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Reference {
    pub parameters: Option<u64>,
    pub errors: Option<(f64, f64)>,
}

/// The paper's values for a model of the paper's own shape (no width, block or
/// unshared-count changes, f32), where it gives them.
pub fn reference(model: &ModelSpec) -> Reference {
    let paper_shape = model.width.is_none()
        && model.blocks.is_none()
        && (model.sharing == Sharing::None || model.unshared_blocks == 5)
        && model.dtype == Precision::F32;
    if !paper_shape {
        return Reference::default();
    }
    let c100 = model.classes == 100;
    let label = model.label();
    let parameters = match (label.as_str(), c100) {
        ("resnet-32", false) => Some(467_946),
        ("resnet-32", true) => Some(473_796),
        ("resnet-38", false) => Some(565_386),
        ("resnet-38", true) => Some(571_236),
        ("resnet-56", false) => Some(857_706),
        ("resnet-56", true) => Some(863_556),
        ("resnet-110", false) => Some(1_734_666),
        ("resnet-110", true) => Some(1_740_516),
        ("single", false) => Some(1_825_010),
        ("avgpool", false) => Some(12_183_010),
        ("wide", false) => Some(45_711_050),
        ("resnet-110-naive", false) => Some(565_386),
        ("resnet-110-ubn", false) => Some(570_762),
        ("resnet-146-ubn", false) => Some(573_450),
        ("resnet-182-ubn", false) => Some(576_138),
        ("resnet-110-ubn", true) => Some(576_612),
        ("resnet-146-ubn", true) => Some(579_300),
        ("resnet-182-ubn", true) => Some(581_988),
        _ => None,
    };
    // Percentages, as paper.md writes them.
    let errors: Option<(f64, f64)> = match (label.as_str(), c100) {
        ("resnet-32", false) => Some((1.53, 7.14)),
        ("resnet-32", true) => Some((12.62, 30.08)),
        ("resnet-38", false) => Some((1.20, 6.99)),
        ("resnet-38", true) => Some((10.04, 29.66)),
        ("resnet-56", false) => Some((0.58, 6.53)),
        ("resnet-56", true) => Some((5.19, 28.99)),
        ("resnet-110", false) => Some((0.22, 6.13)),
        ("resnet-110", true) => Some((1.26, 27.54)),
        ("resnet-110-ubn", false) => Some((0.63, 6.62)),
        ("resnet-110-ubn", true) => Some((7.75, 29.94)),
        ("resnet-146-ubn", false) => Some((0.68, 6.82)),
        ("resnet-146-ubn", true) => Some((7.21, 29.49)),
        ("resnet-182-ubn", false) => Some((0.48, 6.97)),
        ("resnet-182-ubn", true) => Some((6.42, 29.33)),
        _ => None,
    };
    Reference {
        parameters,
        errors: errors.map(|(train, test)| (train / 100.0, test / 100.0)),
    }
}

/// One configuration's row of Table 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TableRow {
    pub configuration: String,
    /// Trainable parameters of its model.
    pub parameters: Option<u64>,
    /// The paper's count, for a model of the paper's own shape.
    pub paper_parameters: Option<u64>,
    /// Train error of each analysed seed, in [0, 1]: inference-mode BatchNorm on the
    /// analysed subset of the un-augmented training set (the paper's definition, on a
    /// subset).
    pub train_errors: Vec<f64>,
    /// Final test error of each seed that trained all its epochs, in [0, 1].
    pub test_errors: Vec<f64>,
    pub paper_train_error: Option<f64>,
    pub paper_test_error: Option<f64>,
}

/// What Table 1's errors are.
pub const TABLE_NOTE: &str = "Errors in %, mean ± sample standard deviation over seeds. \
    Test error: the whole test set after the last epoch. Train error: inference-mode \
    BatchNorm on the analysed subset of the un-augmented training set.";

/// The column headings of [`TableRow::cells`].
pub const TABLE_HEADER: [&str; 6] = [
    "configuration",
    "parameters",
    "paper",
    "train error %",
    "test error %",
    "paper train / test %",
];

impl TableRow {
    /// The row as text, as the report, the dashboard and the CLI show it: errors in % as
    /// mean ± sample standard deviation over seeds, `—` where there is nothing.
    pub fn cells(&self) -> [String; 6] {
        let count = |n: Option<u64>| n.map_or("—".into(), |n| n.to_string());
        let paper_errors = match (self.paper_train_error, self.paper_test_error) {
            (Some(train), Some(test)) => format!("{:.2} / {:.2}", 100.0 * train, 100.0 * test),
            _ => "—".into(),
        };
        [
            self.configuration.clone(),
            count(self.parameters),
            count(self.paper_parameters),
            percent_spread(&self.train_errors),
            percent_spread(&self.test_errors),
            paper_errors,
        ]
    }
}

/// Table 1 of an experiment, one row per configuration in order.
pub fn table(configs: &[Config]) -> Vec<TableRow> {
    configs
        .iter()
        .map(|c| TableRow {
            configuration: c.label.to_string(),
            parameters: c.parameters,
            paper_parameters: c.reference.parameters,
            train_errors: c
                .seeds
                .iter()
                .filter_map(|(records, _)| {
                    records.iter().find(|r| {
                        r.name == MetricName::Accuracy
                            && r.split == Split::Train
                            && r.block.is_none()
                    })
                })
                .map(|r| 1.0 - r.value)
                .collect(),
            test_errors: c.test_errors.clone(),
            paper_train_error: c.reference.errors.map(|e| e.0),
            paper_test_error: c.reference.errors.map(|e| e.1),
        })
        .collect()
}

/// Errors in %, mean ± sample standard deviation with the number of seeds; `—` for none.
pub fn percent_spread(values: &[f64]) -> String {
    if values.is_empty() {
        return "—".into();
    }
    let (m, sd) = crate::stats::mean_std(values);
    if values.len() < 2 {
        return format!("{:.2} (n=1)", 100.0 * m);
    }
    format!("{:.2} ± {:.2} (n={})", 100.0 * m, 100.0 * sd, values.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AnalysisRecord, Arch};

    fn model(depth: u32, sharing: Sharing) -> ModelSpec {
        ModelSpec {
            depth: Some(depth),
            sharing,
            ..ModelSpec::new(Arch::Resnet)
        }
    }

    #[test]
    fn the_paper_s_models_get_its_numbers_and_others_none() {
        let r110 = reference(&model(110, Sharing::None));
        assert_eq!(r110.parameters, Some(1_734_666));
        let (train, test) = r110.errors.unwrap();
        assert!((train - 0.0022).abs() < 1e-12 && (test - 0.0613).abs() < 1e-12);
        // The paper's count is the model's own.
        let layout = model(110, Sharing::None).layout().unwrap();
        assert_eq!(Some(layout.trainable_parameters()), r110.parameters);
        let narrow = ModelSpec {
            width: Some(8),
            ..model(110, Sharing::None)
        };
        assert_eq!(reference(&narrow), Reference::default());
        assert_eq!(reference(&model(20, Sharing::None)), Reference::default());
    }

    #[test]
    fn a_row_per_configuration_with_train_errors_from_its_analyses() {
        let train =
            |accuracy| AnalysisRecord::new(MetricName::Accuracy, Split::Train, 1, accuracy, 100);
        let (a, b) = (vec![train(0.75)], vec![train(0.5)]);
        let r110 = model(110, Sharing::None);
        let configs = [
            Config {
                seeds: vec![(&a, None), (&b, None)],
                test_errors: vec![0.1, 0.2],
                ..Config::new("resnet-110", &r110)
            },
            Config::new("ubn", &model(110, Sharing::Ubn)),
        ];
        let rows = table(&configs);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].train_errors, [0.25, 0.5]);
        assert_eq!(rows[0].test_errors, [0.1, 0.2]);
        assert_eq!(rows[0].paper_parameters, Some(1_734_666));
        assert_eq!(rows[1].parameters, Some(570_762));
        assert!(rows[1].train_errors.is_empty());
        assert_eq!(
            rows[0].cells(),
            [
                "resnet-110",
                "1734666",
                "1734666",
                "37.50 ± 17.68 (n=2)",
                "15.00 ± 7.07 (n=2)",
                "0.22 / 6.13"
            ]
        );
        assert_eq!(
            rows[1].cells(),
            ["ubn", "570762", "570762", "—", "—", "0.63 / 6.62"]
        );
        assert_eq!(percent_spread(&[0.1]), "10.00 (n=1)");
        assert_eq!(percent_spread(&[]), "—");
    }
}
