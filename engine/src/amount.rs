//! Money: amounts on `rust_decimal`, currencies and their scale.
//!
//! Amounts travel as JSON strings of decimal digits and are never floats. Inside the ledger an
//! amount is a [`Decimal`] rescaled to its currency's scale, so every total of an account keeps
//! exactly `scale` fractional digits. Arithmetic on totals goes through [`add_total`] and
//! [`sub_total`], which refuse (rather than round) any result that would exceed
//! [`TOTAL_ABS_MAX`] or that `Decimal`'s 96-bit mantissa cannot hold exactly.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// An amount of money. Always non-negative for transfer amounts; totals may be negative.
pub type Amount = Decimal;

/// No total of an account may exceed this in absolute value (10^24).
pub const TOTAL_ABS_MAX: Decimal = Decimal::from_parts(0xa100_0000, 0x1bce_cced, 0xd3c2, false, 0);

/// Why a string is not an acceptable amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("an amount is a string of decimal digits such as \"12.50\"")]
    Syntax,
    #[error("an amount must be greater than zero")]
    NotPositive,
    #[error("an amount must not exceed {max}")]
    AboveMax { max: Decimal },
    #[error("{currency} amounts have at most {scale} fractional digits")]
    TooManyDecimals { currency: Arc<str>, scale: u32 },
}

/// Parses a client amount: `digits` or `digits.digits`, positive, at most `amount_max`.
/// The written scale is kept (`"12.50"` has scale 2); the currency check comes later, once the
/// account is known.
pub fn parse_amount(text: &str, amount_max: Decimal) -> Result<Decimal, AmountError> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let digits_only = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !digits_only(whole) || fraction.is_some_and(|fraction| !digits_only(fraction)) {
        return Err(AmountError::Syntax);
    }
    // Leading zeros are allowed; strip them so that a long run of zeros cannot overflow the
    // 28-digit mantissa on its own.
    let significant = whole.trim_start_matches('0');
    let whole_digits = if significant.is_empty() { "0" } else { significant };
    if whole_digits.len() > 25 || fraction.is_some_and(|fraction| fraction.len() > 28) {
        // Certainly above any configurable maximum (10^24) or beyond any scale (at most 18).
        return Err(if whole_digits.len() > 25 {
            AmountError::AboveMax { max: amount_max }
        } else {
            AmountError::Syntax
        });
    }
    let normalized = match fraction {
        Some(fraction) => format!("{whole_digits}.{fraction}"),
        None => whole_digits.to_owned(),
    };
    let value = Decimal::from_str(&normalized).map_err(|_| AmountError::Syntax)?;
    if value.is_zero() {
        return Err(AmountError::NotPositive);
    }
    if value > amount_max {
        return Err(AmountError::AboveMax { max: amount_max });
    }
    Ok(value)
}

/// `limits.amount_max` (whole currency units, at most 10^24) as an amount.
pub fn amount_max_of_units(units: u128) -> Decimal {
    let units = i128::try_from(units).unwrap_or(i128::MAX).min(10_i128.pow(24));
    Decimal::from_i128_with_scale(units, 0)
}

/// A currency: its code and how many fractional digits its amounts have.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Currency {
    pub code: Arc<str>,
    pub scale: u32,
}

impl Currency {
    pub fn new(code: &str, scale: u32) -> Currency {
        Currency { code: Arc::from(code), scale }
    }

    /// Checks that `amount` has no more fractional digits than this currency allows, and
    /// returns it rescaled to exactly the currency's scale.
    pub fn normalize(&self, amount: Decimal) -> Result<Decimal, AmountError> {
        if amount.scale() > self.scale {
            // "12.500" for USD is refused even though its value fits: the contract counts the
            // digits as written. Values are rescaled upward only, which never rounds.
            return Err(AmountError::TooManyDecimals { currency: self.code.clone(), scale: self.scale });
        }
        let mut scaled = amount;
        scaled.rescale(self.scale);
        if scaled != amount {
            return Err(AmountError::AboveMax { max: TOTAL_ABS_MAX });
        }
        Ok(scaled)
    }

    /// Prints an amount with exactly the currency's scale: `"12.50"` for USD.
    pub fn format(&self, amount: Decimal) -> String {
        format_scaled(amount, self.scale)
    }

    /// Zero at this currency's scale.
    pub fn zero(&self) -> Decimal {
        Decimal::new(0, self.scale)
    }
}

/// Prints `amount` with exactly `scale` fractional digits.
pub fn format_scaled(amount: Decimal, scale: u32) -> String {
    let mut scaled = amount;
    scaled.rescale(scale);
    scaled.to_string()
}

/// `a + b` for a total of an account at `scale`: `None` when the result exceeds
/// [`TOTAL_ABS_MAX`] in absolute value or cannot be held exactly at `scale`.
pub fn add_total(a: Decimal, b: Decimal, scale: u32) -> Option<Decimal> {
    exact_total(a.checked_add(b)?, scale)
}

/// `a - b` for a total of an account at `scale`, with the same refusals as [`add_total`].
pub fn sub_total(a: Decimal, b: Decimal, scale: u32) -> Option<Decimal> {
    exact_total(a.checked_sub(b)?, scale)
}

fn exact_total(value: Decimal, scale: u32) -> Option<Decimal> {
    // rust_decimal lowers the scale (rounds) when a result needs more than 96 bits of
    // mantissa; a total whose scale dropped below the currency's scale lost precision.
    if value.abs() > TOTAL_ABS_MAX {
        return None;
    }
    if value.scale() < scale {
        let mut widened = value;
        widened.rescale(scale);
        if widened.scale() != scale {
            return None;
        }
        return Some(widened);
    }
    Some(value)
}

/// The configured currencies, looked up by code.
#[derive(Debug, Clone, Default)]
pub struct CurrencyTable {
    by_code: HashMap<Arc<str>, Currency>,
}

impl CurrencyTable {
    pub fn new(currencies: impl IntoIterator<Item = Currency>) -> CurrencyTable {
        CurrencyTable { by_code: currencies.into_iter().map(|currency| (currency.code.clone(), currency)).collect() }
    }

    pub fn get(&self, code: &str) -> Option<&Currency> {
        self.by_code.get(code)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Currency> {
        self.by_code.values()
    }
}

/// Serde for a `Decimal` as its 16-byte binary form: compact and exact in postcard.
pub mod decimal_bytes {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&value.serialize())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        let bytes: &[u8] = <&[u8]>::deserialize(deserializer)?;
        let array: [u8; 16] = bytes.try_into().map_err(|_| serde::de::Error::custom("a decimal is 16 bytes"))?;
        let value = Decimal::deserialize(array);
        if value.scale() > 28 {
            return Err(serde::de::Error::custom("decimal scale above 28"));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max() -> Decimal {
        Decimal::from(1_000_000_000_000_000_i64)
    }

    #[test]
    fn total_abs_max_is_ten_to_the_24() {
        assert_eq!(TOTAL_ABS_MAX, Decimal::from_str("1000000000000000000000000").unwrap());
    }

    #[test]
    fn parses_good_amounts_keeping_written_scale() {
        assert_eq!(parse_amount("12.5", max()).unwrap().to_string(), "12.5");
        assert_eq!(parse_amount("12.50", max()).unwrap().scale(), 2);
        assert_eq!(parse_amount("007", max()).unwrap(), Decimal::from(7));
        assert_eq!(parse_amount("1000000000000000", max()).unwrap(), max());
        assert_eq!(parse_amount("0.000000000000000001", max()).unwrap().scale(), 18);
    }

    #[test]
    fn rejects_bad_amounts() {
        for text in ["", "12.", ".5", "1e3", "NaN", "-1", "+1", " 1", "1 ", "1,5", "0x10", "１", "inf"] {
            assert_eq!(parse_amount(text, max()), Err(AmountError::Syntax), "{text:?}");
        }
        for text in ["0", "0.00", "000"] {
            assert_eq!(parse_amount(text, max()), Err(AmountError::NotPositive), "{text:?}");
        }
        for text in ["1000000000000000.01", "99999999999999999999999999999999999"] {
            assert!(matches!(parse_amount(text, max()), Err(AmountError::AboveMax { .. })), "{text:?}");
        }
    }

    #[test]
    fn normalize_counts_written_digits() {
        let usd = Currency::new("USD", 2);
        assert_eq!(usd.normalize(Decimal::from_str("12.5").unwrap()).unwrap().to_string(), "12.50");
        assert!(matches!(
            usd.normalize(Decimal::from_str("12.500").unwrap()),
            Err(AmountError::TooManyDecimals { .. })
        ));
        assert_eq!(usd.format(Decimal::from(3)), "3.00");
        assert_eq!(Currency::new("JPY", 0).format(Decimal::from(3)), "3");
    }

    #[test]
    fn totals_refuse_overflow_and_rounding() {
        let near = TOTAL_ABS_MAX - Decimal::ONE;
        assert_eq!(add_total(near, Decimal::ONE, 0), Some(TOTAL_ABS_MAX));
        assert_eq!(add_total(TOTAL_ABS_MAX, Decimal::ONE, 0), None);
        assert_eq!(sub_total(-near, Decimal::from(2), 0), None);
        // 10^20 at scale 18 needs 38 digits: more than the mantissa holds exactly.
        let big = Decimal::from_str("100000000000").unwrap();
        let wei = Decimal::from_str("0.000000000000000001").unwrap();
        assert_eq!(add_total(big, wei, 18), None);
        assert!(add_total(Decimal::from(5), wei, 18).is_some());
    }

    #[test]
    fn decimal_bytes_round_trip() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Holder(#[serde(with = "decimal_bytes")] Decimal);
        let value = Holder(Decimal::from_str("-123.4500").unwrap());
        let bytes = postcard::to_allocvec(&value).unwrap();
        let back: Holder = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, value);
        assert_eq!(back.0.scale(), 4);
    }
}
