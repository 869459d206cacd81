//! Metric records: one name per metric everywhere (metrics.jsonl, database, API, CSV).

use crate::BlockId;
use serde::de::IntoDeserializer;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricName {
    /// Mean cross-entropy. Split `train`: running mean over the epoch's augmented
    /// mini-batches with BatchNorm in training mode; split `test`: inference mode.
    Loss,
    /// Top-1 accuracy in [0, 1], with the same split convention as `loss`.
    Accuracy,
    /// The trained head applied to the output of one block of the last stage.
    IntermediateAccuracy,
    IntermediateLoss,
    /// Mean ‖∂L/∂h‖ at the first block over the mean at the first block of the last stage.
    GradNormRatio,
    LearningRate,
    /// Training throughput of the epoch (optimizer steps only).
    ImagesPerSecond,
    EpochSeconds,
    // Block-wise analysis of a checkpoint (see paper.md; projection blocks use the shortcut
    // output P(h_i) in place of h_i and are marked by their kind).
    /// cos(F_i(h_i), ∂L/∂h_i) per example.
    Cosine,
    /// ‖F_i(h_i)‖ / ‖h_i‖ per example.
    L2Ratio,
    /// Accuracy and loss of the network with block i's residual branch skipped.
    DropAccuracy,
    DropLoss,
    /// The head along the last blocks, per group of examples (all, borderline, correct,
    /// misclassified).
    BorderlineLoss,
    BorderlineAccuracy,
    BorderlineEntropy,
    /// Unrolling the last block: h ← h + α·F(h), per step and α.
    UnrollLoss,
    UnrollAccuracy,
    UnrollEntropy,
    UnrollCosine,
    UnrollL2Ratio,
    /// α·⟨F(h), ∇ℓ(h)⟩ per example at step k: the first-order prediction of the change of
    /// the head's loss ℓ over the step from k to k + 1. Its mean weighs each example by
    /// ‖F(h)‖·‖∇ℓ(h)‖, where the mean cosine weighs all alike.
    UnrollFirstOrder,
    /// ‖h_i‖ per example in a freshly initialised model.
    ActivationNorm,
    /// ℓ(h_{i+1}) − ℓ(h_i) with ℓ the head's loss, and its first-order prediction
    /// ⟨F_i(h_i), ∇ℓ(h_i)⟩, per example; how often their signs agree, and their correlation.
    TaylorActual,
    TaylorPredicted,
    TaylorSignAgreement,
    TaylorCorrelation,
}

impl MetricName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loss => "loss",
            Self::Accuracy => "accuracy",
            Self::IntermediateAccuracy => "intermediate_accuracy",
            Self::IntermediateLoss => "intermediate_loss",
            Self::GradNormRatio => "grad_norm_ratio",
            Self::LearningRate => "learning_rate",
            Self::ImagesPerSecond => "images_per_second",
            Self::EpochSeconds => "epoch_seconds",
            Self::Cosine => "cosine",
            Self::L2Ratio => "l2_ratio",
            Self::DropAccuracy => "drop_accuracy",
            Self::DropLoss => "drop_loss",
            Self::BorderlineLoss => "borderline_loss",
            Self::BorderlineAccuracy => "borderline_accuracy",
            Self::BorderlineEntropy => "borderline_entropy",
            Self::UnrollLoss => "unroll_loss",
            Self::UnrollAccuracy => "unroll_accuracy",
            Self::UnrollEntropy => "unroll_entropy",
            Self::UnrollCosine => "unroll_cosine",
            Self::UnrollL2Ratio => "unroll_l2_ratio",
            Self::UnrollFirstOrder => "unroll_first_order",
            Self::ActivationNorm => "activation_norm",
            Self::TaylorActual => "taylor_actual",
            Self::TaylorPredicted => "taylor_predicted",
            Self::TaylorSignAgreement => "taylor_sign_agreement",
            Self::TaylorCorrelation => "taylor_correlation",
        }
    }
}

impl fmt::Display for MetricName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MetricName {
    type Err = String;

    /// The metric its wire name names (serde's, the one `as_str` gives), for flags: an
    /// unknown one is an error listing them all.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::deserialize(s.into_deserializer()).map_err(|e: serde::de::value::Error| e.to_string())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value of one metric at the end of one epoch (epochs count from 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricRecord {
    pub name: MetricName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    pub epoch: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<BlockId>,
    /// The block's 0-based global index, present whenever `block` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_index: Option<u32>,
    /// `null` on the wire where not finite (`number_or_null`).
    #[serde(with = "number_or_null")]
    pub value: f64,
}

/// A value that may not be finite (a test loss that overflowed, a ratio of two zeros), as
/// JSON carries it: JSON has no NaN or infinity, so such a value is written `null` and read
/// back as NaN — a record that says "not a number" rather than one no reader can parse.
pub(crate) mod number_or_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
        match value.is_finite() {
            true => s.serialize_f64(*value),
            false => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

impl MetricRecord {
    pub fn new(name: MetricName, split: Option<Split>, epoch: u32, value: f64) -> Self {
        Self {
            name,
            split,
            epoch,
            block: None,
            block_index: None,
            value,
        }
    }

    pub fn at_block(mut self, block: BlockId, index: u32) -> Self {
        self.block = Some(block);
        self.block_index = Some(index);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_is_read_by_its_wire_name() {
        assert_eq!(
            "unroll_first_order".parse::<MetricName>(),
            Ok(MetricName::UnrollFirstOrder)
        );
        assert_eq!(
            MetricName::TaylorSignAgreement.as_str().parse(),
            Ok(MetricName::TaylorSignAgreement)
        );
        let unknown = "speed".parse::<MetricName>().unwrap_err();
        assert!(
            unknown.starts_with("unknown variant `speed`, expected one of `loss`"),
            "{unknown}"
        );
    }

    #[test]
    fn a_value_that_is_not_finite_travels_as_null_and_reads_back_as_nan() {
        let record = |value| MetricRecord::new(MetricName::Loss, Some(Split::Test), 3, value);
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let json = serde_json::to_string(&record(value)).unwrap();
            assert_eq!(
                json,
                r#"{"name":"loss","split":"test","epoch":3,"value":null}"#
            );
            let back: MetricRecord = serde_json::from_str(&json).unwrap();
            assert!(back.value.is_nan());
        }
        let json = serde_json::to_string(&record(0.25)).unwrap();
        assert_eq!(
            serde_json::from_str::<MetricRecord>(&json).unwrap(),
            record(0.25)
        );
        let analysis =
            crate::AnalysisRecord::new(MetricName::UnrollLoss, Split::Train, 1, f64::NAN, 5);
        let json = serde_json::to_string(&analysis).unwrap();
        assert!(json.contains(r#""value":null"#), "{json}");
        let back: crate::AnalysisRecord = serde_json::from_str(&json).unwrap();
        assert!(back.value.is_nan() && back.n == 5);
    }

    #[test]
    fn as_str_is_the_serde_name() {
        for name in [
            MetricName::Loss,
            MetricName::IntermediateAccuracy,
            MetricName::L2Ratio,
            MetricName::DropAccuracy,
            MetricName::UnrollCosine,
            MetricName::TaylorSignAgreement,
        ] {
            assert_eq!(
                serde_json::to_string(&name).unwrap(),
                format!("\"{}\"", name.as_str())
            );
        }
    }

    #[test]
    fn serialises_with_the_shared_names() {
        let r = MetricRecord::new(MetricName::IntermediateAccuracy, Some(Split::Test), 3, 0.5)
            .at_block(BlockId::new(2, 4), 40);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"name":"intermediate_accuracy","split":"test","epoch":3,"block":"s2.b4","block_index":40,"value":0.5}"#
        );
        assert_eq!(serde_json::from_str::<MetricRecord>(&json).unwrap(), r);
        let plain = MetricRecord::new(MetricName::LearningRate, None, 1, 0.1);
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"name":"learning_rate","epoch":1,"value":0.1}"#
        );
    }
}
