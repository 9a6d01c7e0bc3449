//! Money: amounts in integer minor units, currencies and their scale, and the bound on totals.
//!
//! Inside the ledger an amount is an [`Amount`]: a signed count of the currency's minor units in
//! an `i128` (`12.50 USD` is 1250). It is never a float and never rounded. A client writes an
//! amount as a JSON string of decimal digits; [`parse_amount`] reads it into a
//! [`WrittenAmount`], which keeps how many fractional digits were written, because the contract
//! refuses `"12.500"` for USD even though its value fits, and compares amounts by value for
//! idempotency (`"100"` = `"100.00"`). [`Currency::normalize`] turns a written amount into minor
//! units once the currency is known.
//!
//! The bound: no total of an account (`debits_posted`, `credits_posted`, `pending_debits`,
//! `pending_credits`, `balance`) may exceed 10^24 units or 10^36 minor units of its currency
//! in absolute value, whichever is smaller ([`Currency::total_max`]: 10^24 USD, 10^18 ETH).
//! Every bound is far inside `i128` (±1.7 × 10^38), so the sum of two bounded values never
//! overflows, and [`Currency::add_total`] / [`Currency::sub_total`] refuse a result past the
//! bound instead of wrapping.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Largest scale (fractional digits) of a currency.
pub const SCALE_MAX: u32 = 18;
/// The bound on totals in units: 10^24.
pub const TOTAL_UNITS_DIGITS: u32 = 24;
/// The bound on totals in minor units: 10^36.
pub const TOTAL_MINOR_UNITS_DIGITS: u32 = 36;
/// 10^36, the bound on totals in minor units of any currency.
pub const TOTAL_MINOR_UNITS_MAX: i128 = 10_i128.pow(TOTAL_MINOR_UNITS_DIGITS);
/// What a normalized amount beyond every bound is held as: `2 × 10^36 + 1` minor units. An
/// account can cover at most `available + overdraft ≤ 2 × 10^36`, and a total may reach at
/// most 10^36, so every check gives such an amount the same verdict (`insufficient_funds` or
/// `overflow`) as its true, larger value.
pub const AMOUNT_SATURATED: Amount = Amount(2 * TOTAL_MINOR_UNITS_MAX + 1);

const _: () = assert!(SCALE_MAX + TOTAL_UNITS_DIGITS >= TOTAL_MINOR_UNITS_DIGITS);
// Two bounded values (and the saturated amount) add up without leaving i128.
const _: () = assert!(AMOUNT_SATURATED.0.checked_add(AMOUNT_SATURATED.0).is_some());
// A written fraction of up to SCALE_MAX digits fits a u64.
const _: () = assert!(10_u64.checked_pow(SCALE_MAX).is_some());

/// An amount of money in minor units of its currency. Transfer amounts are positive; totals
/// and balances may be negative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Amount(i128);

impl Amount {
    pub const ZERO: Amount = Amount(0);

    pub const fn from_minor_units(units: i128) -> Amount {
        Amount(units)
    }

    pub const fn minor_units(self) -> i128 {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// `self + other`, `None` if it leaves `i128` (never for bounded values).
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    /// `self - other`, `None` if it leaves `i128` (never for bounded values).
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    pub fn abs(self) -> Amount {
        Amount(self.0.saturating_abs())
    }
}

/// Why a string is not an acceptable amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("an amount is a string of decimal digits such as \"12.50\"")]
    Syntax,
    #[error("an amount must be greater than zero")]
    NotPositive,
    #[error("an amount must not exceed {max}")]
    AboveMax { max: u128 },
    #[error("{currency} amounts have at most {scale} fractional digits")]
    TooManyDecimals { currency: Arc<str>, scale: u32 },
}

/// An amount as a client wrote it, after syntax checks: its value as whole units and a
/// fraction, and the number of fractional digits written (trailing zeros included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WrittenAmount {
    /// Whole units (leading zeros gone); at most `amount_max` (≤ 10^24).
    whole: u128,
    /// The fraction's significant digits, trailing zeros gone: `0.050` is `5` with 2 digits.
    fraction: u64,
    /// Digits of `fraction`; [`FRACTION_TOO_LONG`] when more than [`SCALE_MAX`] significant
    /// digits were written (no currency can hold the value, and no stored amount equals it).
    fraction_digits: u32,
    /// Fractional digits as written, trailing zeros included.
    written_scale: u32,
}

/// `fraction_digits` of a value with more significant fractional digits than any currency has.
const FRACTION_TOO_LONG: u32 = u32::MAX;

impl WrittenAmount {
    /// A whole number of units (as if written without a fraction).
    pub fn from_units(units: u128) -> WrittenAmount {
        WrittenAmount { whole: units, fraction: 0, fraction_digits: 0, written_scale: 0 }
    }

    /// `minor_units` of a currency with `scale`, as if written with exactly `scale` digits
    /// (how the ledger itself writes amounts).
    pub fn from_minor_units(minor_units: u128, scale: u32) -> WrittenAmount {
        assert!(scale <= SCALE_MAX, "a scale is at most {SCALE_MAX}");
        let unit = 10_u128.pow(scale);
        let fraction = u64::try_from(minor_units % unit).expect("a fraction below 10^18 fits u64");
        let mut written =
            WrittenAmount { whole: minor_units / unit, fraction, fraction_digits: scale, written_scale: scale };
        written.strip_trailing_zeros();
        written
    }

    /// Fractional digits as written, trailing zeros included.
    pub fn written_scale(&self) -> u32 {
        self.written_scale
    }

    pub fn is_zero(&self) -> bool {
        self.whole == 0 && self.fraction == 0
    }

    /// Whether this is the same value as `amount` of a currency with `scale` (idempotency
    /// compares amounts by value: `"100"` = `"100.00"`).
    pub fn same_value(&self, amount: Amount, scale: u32) -> bool {
        if self.fraction_digits == FRACTION_TOO_LONG || amount.is_negative() {
            return false;
        }
        let stored = WrittenAmount::from_minor_units(amount.minor_units().unsigned_abs(), scale);
        stored.whole == self.whole && stored.fraction == self.fraction && stored.fraction_digits == self.fraction_digits
    }

    /// The same value as if written without trailing zeros (`"0.50000000"` as `"0.5"`): for
    /// amounts a provider reports, which are accepted by value.
    pub fn without_trailing_zeros(&self) -> WrittenAmount {
        let mut stripped = *self;
        stripped.written_scale =
            if self.fraction_digits == FRACTION_TOO_LONG { self.written_scale } else { self.fraction_digits };
        stripped
    }

    fn strip_trailing_zeros(&mut self) {
        if self.fraction_digits == FRACTION_TOO_LONG {
            return;
        }
        while self.fraction_digits > 0 && self.fraction.is_multiple_of(10) {
            self.fraction /= 10;
            self.fraction_digits -= 1;
        }
        if self.fraction == 0 {
            self.fraction_digits = 0;
        }
    }
}

impl std::str::FromStr for WrittenAmount {
    type Err = AmountError;

    /// A positive amount at most 10^24 units (the largest `amount_max`).
    fn from_str(text: &str) -> Result<WrittenAmount, AmountError> {
        parse_amount(text, 10_u128.pow(TOTAL_UNITS_DIGITS))
    }
}

/// Parses a client amount: `digits` or `digits.digits`, positive, at most `amount_max` whole
/// units by value (`"1000000000000000.00000000000001"` is above 10^15). The written number of
/// fractional digits is kept; the currency's scale is checked later, once the account is known.
pub fn parse_amount(text: &str, amount_max: u128) -> Result<WrittenAmount, AmountError> {
    let written = parse_non_negative(text, amount_max)?;
    if written.is_zero() {
        return Err(AmountError::NotPositive);
    }
    Ok(written)
}

/// Like [`parse_amount`], but zero is accepted (an overdraft limit).
pub fn parse_non_negative(text: &str, amount_max: u128) -> Result<WrittenAmount, AmountError> {
    let (whole_text, fraction_text) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let digits_only = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    if !digits_only(whole_text) || fraction_text.is_some_and(|fraction| !digits_only(fraction)) {
        return Err(AmountError::Syntax);
    }
    // Leading zeros are allowed; more than 25 significant digits is above any maximum (10^24).
    let significant = whole_text.trim_start_matches('0');
    if significant.len() > 25 {
        return Err(AmountError::AboveMax { max: amount_max });
    }
    let whole =
        if significant.is_empty() { 0 } else { significant.parse::<u128>().map_err(|_| AmountError::Syntax)? };
    let fraction_text = fraction_text.unwrap_or("");
    let written_scale = u32::try_from(fraction_text.len()).map_err(|_| AmountError::Syntax)?;
    let significant_fraction = fraction_text.trim_end_matches('0');
    let (fraction, fraction_digits) = if significant_fraction.len() > SCALE_MAX as usize {
        (1, FRACTION_TOO_LONG)
    } else {
        let digits = u32::try_from(significant_fraction.len()).expect("at most 18 digits");
        let value = if significant_fraction.is_empty() {
            0
        } else {
            significant_fraction.parse::<u64>().map_err(|_| AmountError::Syntax)?
        };
        (value, digits)
    };
    let above = whole > amount_max || (whole == amount_max && fraction != 0);
    if above {
        return Err(AmountError::AboveMax { max: amount_max });
    }
    Ok(WrittenAmount { whole, fraction, fraction_digits, written_scale })
}

/// A currency: its code, how many fractional digits its amounts have, and the bound on its
/// totals.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "CurrencyFields", into = "CurrencyFields")]
pub struct Currency {
    pub code: Arc<str>,
    pub scale: u32,
    /// 10^min(24 + scale, 36) minor units.
    total_max: Amount,
}

/// How a currency is written in records and snapshots: code and scale (the bound follows).
#[derive(Serialize, Deserialize)]
struct CurrencyFields {
    code: Arc<str>,
    scale: u32,
}

impl From<CurrencyFields> for Currency {
    fn from(fields: CurrencyFields) -> Currency {
        Currency::with_code(fields.code, fields.scale.min(SCALE_MAX))
    }
}

impl From<Currency> for CurrencyFields {
    fn from(currency: Currency) -> CurrencyFields {
        CurrencyFields { code: currency.code, scale: currency.scale }
    }
}

impl Currency {
    /// A currency of `scale` (at most [`SCALE_MAX`]) fractional digits.
    pub fn new(code: &str, scale: u32) -> Currency {
        Currency::with_code(Arc::from(code), scale)
    }

    fn with_code(code: Arc<str>, scale: u32) -> Currency {
        assert!(scale <= SCALE_MAX, "a currency has at most {SCALE_MAX} fractional digits, not {scale}");
        let digits = (TOTAL_UNITS_DIGITS + scale).min(TOTAL_MINOR_UNITS_DIGITS);
        Currency { code, scale, total_max: Amount(10_i128.pow(digits)) }
    }

    /// The bound on every total of an account in this currency, in absolute value.
    pub fn total_max(&self) -> Amount {
        self.total_max
    }

    /// Checks that `written` has no more fractional digits than this currency allows, and
    /// returns it in minor units. A value beyond every bound is held as [`AMOUNT_SATURATED`].
    pub fn normalize(&self, written: &WrittenAmount) -> Result<Amount, AmountError> {
        if written.written_scale > self.scale || written.fraction_digits == FRACTION_TOO_LONG {
            // "12.500" for USD is refused even though its value fits: the contract counts the
            // digits as written.
            return Err(AmountError::TooManyDecimals { currency: self.code.clone(), scale: self.scale });
        }
        let unit = 10_u128.pow(self.scale);
        let fraction = u128::from(written.fraction) * 10_u128.pow(self.scale - written.fraction_digits);
        let minor_units = written.whole.checked_mul(unit).and_then(|whole| whole.checked_add(fraction));
        Ok(match minor_units.and_then(|units| i128::try_from(units).ok()) {
            Some(units) if units < AMOUNT_SATURATED.0 => Amount(units),
            _ => AMOUNT_SATURATED,
        })
    }

    /// `a + b` for a total of an account: `None` past the bound.
    pub fn add_total(&self, a: Amount, b: Amount) -> Option<Amount> {
        self.bounded(a.checked_add(b)?)
    }

    /// `a - b` for a total of an account: `None` past the bound.
    pub fn sub_total(&self, a: Amount, b: Amount) -> Option<Amount> {
        self.bounded(a.checked_sub(b)?)
    }

    fn bounded(&self, value: Amount) -> Option<Amount> {
        (value.abs() <= self.total_max).then_some(value)
    }

    /// Prints an amount with exactly the currency's scale: `"12.50"` for USD.
    pub fn format(&self, amount: Amount) -> String {
        format_minor_units(amount.minor_units(), self.scale)
    }

    /// Appends [`Currency::format`]'s text to `out`.
    pub fn write_formatted(&self, amount: Amount, out: &mut String) {
        write_minor_units(amount.minor_units(), self.scale, out);
    }

    /// Reads a total printed by [`Currency::format`] (a `-` allowed, exactly `scale`
    /// fractional digits or fewer): for tools that read the ledger's own answers back.
    pub fn parse_printed(&self, text: &str) -> Option<Amount> {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let written = parse_non_negative(digits, 10_u128.pow(TOTAL_UNITS_DIGITS)).ok()?;
        let amount = self.normalize(&written).ok()?;
        if amount == AMOUNT_SATURATED {
            return None;
        }
        Some(if negative { Amount(-amount.0) } else { amount })
    }
}

/// `minor_units` printed with exactly `scale` fractional digits.
pub fn format_minor_units(minor_units: i128, scale: u32) -> String {
    let mut out = String::with_capacity(24);
    write_minor_units(minor_units, scale, &mut out);
    out
}

fn write_minor_units(minor_units: i128, scale: u32, out: &mut String) {
    use fmt::Write as _;
    if minor_units < 0 {
        out.push('-');
    }
    let magnitude = minor_units.unsigned_abs();
    if scale == 0 {
        let _ = write!(out, "{magnitude}");
        return;
    }
    let unit = 10_u128.pow(scale);
    let width = usize::try_from(scale).expect("a scale fits usize");
    let _ = write!(out, "{}.{:0width$}", magnitude / unit, magnitude % unit);
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

/// An exact sum of many amounts (balances of every account of a currency): `i128` with a
/// count of its wraps, so that partial sums may pass `i128`'s range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExactSum {
    low: i128,
    wraps: i64,
}

impl ExactSum {
    pub fn add(&mut self, amount: Amount) {
        let (low, wrapped) = self.low.overflowing_add(amount.minor_units());
        if wrapped {
            self.wraps += if amount.is_negative() { -1 } else { 1 };
        }
        self.low = low;
    }

    pub fn is_zero(&self) -> bool {
        self.low == 0 && self.wraps == 0
    }

    /// The sum, when it fits an `i128`.
    pub fn value(&self) -> Option<i128> {
        (self.wraps == 0).then_some(self.low)
    }
}

impl fmt::Display for ExactSum {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value() {
            Some(value) => write!(formatter, "{value}"),
            None => write!(formatter, "{} + {} × 2^128", self.low, self.wraps),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u128 = 1_000_000_000_000_000;

    fn usd() -> Currency {
        Currency::new("USD", 2)
    }

    fn minor(text: &str, currency: &Currency) -> i128 {
        currency.normalize(&parse_amount(text, MAX).unwrap()).unwrap().minor_units()
    }

    #[test]
    fn bounds_follow_the_scale() {
        assert_eq!(usd().total_max().minor_units(), 10_i128.pow(26), "10^24 USD");
        assert_eq!(Currency::new("JPY", 0).total_max().minor_units(), 10_i128.pow(24));
        assert_eq!(Currency::new("BTC", 8).total_max().minor_units(), 10_i128.pow(32));
        assert_eq!(Currency::new("ETH", 18).total_max().minor_units(), 10_i128.pow(36), "10^18 ETH");
        assert_eq!(Currency::new("X", 12).total_max().minor_units(), 10_i128.pow(36));
    }

    #[test]
    fn parses_good_amounts_keeping_the_written_scale() {
        assert_eq!(minor("12.5", &usd()), 1250);
        assert_eq!(parse_amount("12.50", MAX).unwrap().written_scale(), 2);
        assert_eq!(minor("007", &usd()), 700);
        assert_eq!(minor("1000000000000000", &usd()), 100_000_000_000_000_000);
        let eth = Currency::new("ETH", 18);
        assert_eq!(minor("0.000000000000000001", &eth), 1);
        assert_eq!(minor("1000000000000000", &eth), 10_i128.pow(33));
    }

    #[test]
    fn rejects_bad_amounts() {
        for text in ["", "12.", ".5", "1e3", "NaN", "-1", "+1", " 1", "1 ", "1,5", "0x10", "１", "inf", "1..2"] {
            assert_eq!(parse_amount(text, MAX), Err(AmountError::Syntax), "{text:?}");
        }
        for text in ["0", "0.00", "000", "0.0000000000000000000000000"] {
            assert_eq!(parse_amount(text, MAX), Err(AmountError::NotPositive), "{text:?}");
        }
        for text in [
            "1000000000000000.01",
            "1000000000000000.00000000000001",
            "1000000000000000.000000000000000000000000000001",
            "1000000000000001",
            "99999999999999999999999999999999999",
        ] {
            assert!(matches!(parse_amount(text, MAX), Err(AmountError::AboveMax { .. })), "{text:?}");
        }
        assert!(parse_amount("1000000000000000.000", MAX).is_ok(), "trailing zeros keep the value");
    }

    #[test]
    fn normalize_counts_written_digits() {
        assert!(matches!(
            usd().normalize(&parse_amount("12.500", MAX).unwrap()),
            Err(AmountError::TooManyDecimals { .. })
        ));
        assert!(usd().normalize(&parse_amount("0.0000000000000000001", MAX).unwrap()).is_err());
        assert_eq!(usd().format(Amount::from_minor_units(300)), "3.00");
        assert_eq!(usd().format(Amount::from_minor_units(-5)), "-0.05");
        assert_eq!(Currency::new("JPY", 0).format(Amount::from_minor_units(3)), "3");
        let eth = Currency::new("ETH", 18);
        assert_eq!(eth.format(Amount::from_minor_units(10_i128.pow(36))), "1000000000000000000.000000000000000000");
    }

    #[test]
    fn amounts_beyond_every_bound_saturate() {
        let eth = Currency::new("ETH", 18);
        let ceiling = 10_u128.pow(24);
        let huge = parse_amount("1000000000000000000000000", ceiling).unwrap();
        assert_eq!(eth.normalize(&huge).unwrap(), AMOUNT_SATURATED);
        assert!(eth.add_total(Amount::ZERO, AMOUNT_SATURATED).is_none());
        let just = parse_amount("1000000000000000000", ceiling).unwrap();
        assert_eq!(eth.normalize(&just).unwrap(), eth.total_max());
    }

    #[test]
    fn totals_refuse_the_bound() {
        let jpy = Currency::new("JPY", 0);
        let max = jpy.total_max();
        let one = Amount::from_minor_units(1);
        assert_eq!(jpy.add_total(max.checked_sub(one).unwrap(), one), Some(max));
        assert_eq!(jpy.add_total(max, one), None);
        assert_eq!(jpy.sub_total(Amount::from_minor_units(-max.minor_units() + 1), Amount::from_minor_units(2)), None);
        // ETH totals reach 10^18 ETH exactly, far beyond rust_decimal's 7.9 × 10^10.
        let eth = Currency::new("ETH", 18);
        let wei = Amount::from_minor_units(1);
        let near = Amount::from_minor_units(10_i128.pow(29));
        assert_eq!(eth.add_total(near, wei).unwrap().minor_units(), 10_i128.pow(29) + 1);
    }

    #[test]
    fn same_value_compares_by_value() {
        let stored = Amount::from_minor_units(10_000);
        for text in ["100", "100.00", "100.0000", "0100"] {
            assert!(parse_amount(text, MAX).unwrap().same_value(stored, 2), "{text}");
        }
        for text in ["100.01", "10", "100.00000000000000000001"] {
            assert!(!parse_amount(text, MAX).unwrap().same_value(stored, 2), "{text}");
        }
        let eth = Amount::from_minor_units(1);
        assert!(parse_amount("0.000000000000000001", MAX).unwrap().same_value(eth, 18));
    }

    #[test]
    fn printed_totals_read_back() {
        for units in [0_i128, 1, -1, 1250, -123_456, 10_i128.pow(26)] {
            let usd = usd();
            assert_eq!(
                usd.parse_printed(&usd.format(Amount::from_minor_units(units))),
                Some(Amount::from_minor_units(units))
            );
        }
    }

    #[test]
    fn exact_sums_pass_the_range_of_i128() {
        let mut sum = ExactSum::default();
        let big = Amount::from_minor_units(i128::MAX / 2 + 1);
        for _ in 0..4 {
            sum.add(big);
        }
        assert!(sum.value().is_none());
        for _ in 0..4 {
            sum.add(Amount::from_minor_units(-big.minor_units()));
        }
        assert!(sum.is_zero());
    }

    #[test]
    fn currencies_round_trip_with_their_bound() {
        let eth = Currency::new("ETH", 18);
        let bytes = postcard::to_allocvec(&eth).unwrap();
        let back: Currency = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, eth);
        assert_eq!(back.total_max(), eth.total_max());
    }
}
