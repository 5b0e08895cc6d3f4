//! Sizes as service files write them (`"64KiB"`, `"1MiB"`, `65536`).

use super::MAX_OUTPUT_BUFFER;

/// Parses a size in bytes: a whole number, optionally followed by `B`,
/// `KiB` or `MiB` (powers of 1024; spaces between number and unit are
/// allowed). `K`, `M`, `KB` and `MB` are refused, since whether they mean
/// 1000 or 1024 would be a guess. The result may not exceed
/// [`MAX_OUTPUT_BUFFER`].
pub fn parse_size(text: &str) -> Result<usize, SizeError> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(SizeError::MissingNumber);
    }
    let unit = unit.trim_start();
    let multiplier: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        _ => {
            return Err(SizeError::UnknownUnit {
                unit: unit.to_string(),
            });
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(multiplier))
        .and_then(|bytes| usize::try_from(bytes).ok())
        .filter(|bytes| *bytes <= MAX_OUTPUT_BUFFER)
        .ok_or(SizeError::TooLarge)
}

/// Why a size could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("a size starts with a whole number, such as \"64KiB\"")]
    MissingNumber,
    #[error("unknown unit {unit:?} (use B, KiB or MiB)")]
    UnknownUnit { unit: String },
    #[error("at most {} MiB", MAX_OUTPUT_BUFFER / (1024 * 1024))]
    TooLarge,
}
