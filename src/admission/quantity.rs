//! Kubernetes resource quantities (`100m`, `8Gi`, `1.5`, `2e3`), parsed to an
//! exact integer number of nano-units so that limits, requests and ceilings
//! compare without floating-point error.
//!
//! The grammar is the API server's:
//!
//! ```text
//! quantity      = [sign] number [suffix]
//! number        = digits | digits "." [digits] | "." digits
//! suffix        = binary | decimal | exponent
//! binary        = "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"          (powers of 1024)
//! decimal       = "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" (powers of 1000)
//! exponent      = ("e" | "E") [sign] digits                          (powers of 10)
//! ```
//!
//! Like the API server, amounts finer than one nano-unit are rounded up
//! (away from zero), so `0.1n` counts as `1n`.

use std::cmp::Ordering;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A parsed quantity: the text as written (what messages show) and its exact
/// value in nano-units (what comparisons use).
///
/// Equality and ordering look at the value only: `4` equals `4000m`.
#[derive(Clone, Debug)]
pub struct Quantity {
    text: String,
    nanos: i128,
}

/// Why a string is not a quantity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text does not follow the quantity grammar.
    #[error("{0:?} is not a Kubernetes quantity")]
    Invalid(String),
    /// The text is a quantity, but too large to represent exactly.
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// How the suffix scales the number.
enum Scale {
    /// Multiply by 10^n.
    Decimal(i64),
    /// Multiply by 2^n.
    Binary(u32),
}

/// Nano-units per unit.
const NANO_EXPONENT: i64 = 9;

impl Quantity {
    /// Parses a quantity.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let invalid = || QuantityError::Invalid(text.to_owned());
        let too_large = || QuantityError::TooLarge(text.to_owned());

        let (negative, unsigned) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let (whole, rest) = split_digits(unsigned);
        let (fraction, suffix) = match rest.strip_prefix('.') {
            Some(after_point) => split_digits(after_point),
            None => ("", rest),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(invalid());
        }
        let scale = parse_suffix(suffix).ok_or_else(invalid)?;

        // The digits without the decimal point, as one integer; the point is
        // accounted for by lowering the decimal exponent.
        let mut mantissa: i128 = 0;
        for digit in whole.bytes().chain(fraction.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(digit - b'0')))
                .ok_or_else(too_large)?;
        }
        let fraction_digits = i64::try_from(fraction.len()).map_err(|_| too_large())?;
        let (binary, decimal) = match scale {
            Scale::Binary(bits) => (bits, 0),
            Scale::Decimal(exponent) => (0, exponent),
        };
        let mut nanos = mantissa
            .checked_mul(1i128 << binary)
            .ok_or_else(too_large)?;
        let exponent = decimal + NANO_EXPONENT - fraction_digits;
        if exponent >= 0 {
            let factor = u32::try_from(exponent)
                .ok()
                .and_then(|e| 10i128.checked_pow(e))
                .ok_or_else(too_large)?;
            nanos = nanos.checked_mul(factor).ok_or_else(too_large)?;
        } else {
            nanos = match u32::try_from(-exponent)
                .ok()
                .and_then(|e| 10i128.checked_pow(e))
            {
                Some(divisor) => nanos / divisor + i128::from(nanos % divisor != 0),
                // Smaller than any representable amount: rounds up to 1n
                // unless it is zero.
                None => i128::from(nanos != 0),
            };
        }
        Ok(Quantity {
            text: text.to_owned(),
            nanos: if negative { -nanos } else { nanos },
        })
    }

    /// Reads a quantity from a JSON value: a string, or a number (the API
    /// server accepts both for int-or-string quantity fields).
    pub fn from_json(value: &serde_json::Value) -> Result<Self, QuantityError> {
        match value {
            serde_json::Value::String(text) => Self::parse(text),
            serde_json::Value::Number(number) => Self::parse(&number.to_string()),
            other => Err(QuantityError::Invalid(other.to_string())),
        }
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The exact value in nano-units (`1` is 10^9, `1m` is 10^6).
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// Whether the quantity is below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }
}

/// Splits off the leading ASCII digits.
fn split_digits(text: &str) -> (&str, &str) {
    let end = text
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(text.len());
    text.split_at(end)
}

fn parse_suffix(suffix: &str) -> Option<Scale> {
    let scale = match suffix {
        "" => Scale::Decimal(0),
        "n" => Scale::Decimal(-9),
        "u" => Scale::Decimal(-6),
        "m" => Scale::Decimal(-3),
        "k" => Scale::Decimal(3),
        "M" => Scale::Decimal(6),
        "G" => Scale::Decimal(9),
        "T" => Scale::Decimal(12),
        "P" => Scale::Decimal(15),
        "E" => Scale::Decimal(18),
        "Ki" => Scale::Binary(10),
        "Mi" => Scale::Binary(20),
        "Gi" => Scale::Binary(30),
        "Ti" => Scale::Binary(40),
        "Pi" => Scale::Binary(50),
        "Ei" => Scale::Binary(60),
        _ => {
            // `e`/`E` followed by a signed integer. A lone `E` is exa (above).
            let exponent = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))?;
            let digits = exponent
                .strip_prefix('-')
                .or_else(|| exponent.strip_prefix('+'))
                .unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Exponents beyond this range over- or underflow anyway; clamping
            // keeps the arithmetic above in range without changing results.
            let value: i64 = exponent.parse().unwrap_or(if exponent.starts_with('-') {
                i64::from(i32::MIN)
            } else {
                i64::from(i32::MAX)
            });
            Scale::Decimal(value.clamp(i64::from(i32::MIN), i64::from(i32::MAX)))
        }
    };
    Some(scale)
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct QuantityVisitor;

        impl Visitor<'_> for QuantityVisitor {
            type Value = Quantity;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Kubernetes quantity such as \"500m\", \"2\" or \"8Gi\"")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Quantity, E> {
                Quantity::parse(text).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, number: u64) -> Result<Quantity, E> {
                self.visit_str(&number.to_string())
            }

            fn visit_i64<E: de::Error>(self, number: i64) -> Result<Quantity, E> {
                self.visit_str(&number.to_string())
            }

            fn visit_f64<E: de::Error>(self, number: f64) -> Result<Quantity, E> {
                self.visit_str(&number.to_string())
            }
        }

        deserializer.deserialize_any(QuantityVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nanos(text: &str) -> i128 {
        Quantity::parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .nanos()
    }

    const GI: i128 = 1 << 30;
    const UNIT: i128 = 1_000_000_000;

    #[test]
    fn parses_plain_and_decimal_suffixes() {
        assert_eq!(nanos("0"), 0);
        assert_eq!(nanos("1"), UNIT);
        assert_eq!(nanos("100m"), 100_000_000);
        assert_eq!(nanos("4000m"), 4 * UNIT);
        assert_eq!(nanos("1k"), 1_000 * UNIT);
        assert_eq!(nanos("2M"), 2_000_000 * UNIT);
        assert_eq!(nanos("3G"), 3_000_000_000 * UNIT);
        assert_eq!(nanos("1T"), 10i128.pow(12) * UNIT);
        assert_eq!(nanos("1P"), 10i128.pow(15) * UNIT);
        assert_eq!(nanos("1E"), 10i128.pow(18) * UNIT);
        assert_eq!(nanos("5u"), 5_000);
        assert_eq!(nanos("7n"), 7);
    }

    #[test]
    fn parses_binary_suffixes() {
        assert_eq!(nanos("1Ki"), 1024 * UNIT);
        assert_eq!(nanos("128Mi"), 128 * (1 << 20) * UNIT);
        assert_eq!(nanos("8Gi"), 8 * GI * UNIT);
        assert_eq!(nanos("1Ti"), (1 << 40) * UNIT);
        assert_eq!(nanos("1Pi"), (1 << 50) * UNIT);
        assert_eq!(nanos("1Ei"), (1 << 60) * UNIT);
        assert_eq!(nanos("1.5Gi"), 3 * GI * UNIT / 2);
    }

    #[test]
    fn parses_fractions_signs_and_exponents() {
        assert_eq!(nanos("1.5"), 1_500_000_000);
        assert_eq!(nanos(".5"), 500_000_000);
        assert_eq!(nanos("2."), 2 * UNIT);
        assert_eq!(nanos("+3"), 3 * UNIT);
        assert_eq!(nanos("-250m"), -250_000_000);
        assert_eq!(nanos("1e3"), 1_000 * UNIT);
        assert_eq!(nanos("1E3"), 1_000 * UNIT);
        assert_eq!(nanos("12e-3"), 12_000_000);
        assert_eq!(nanos("1.5e+2"), 150 * UNIT);
        assert_eq!(nanos("0.001"), 1_000_000);
    }

    #[test]
    fn rounds_sub_nano_amounts_up() {
        assert_eq!(nanos("0.1n"), 1);
        assert_eq!(nanos("1.5n"), 2);
        assert_eq!(nanos("1e-30"), 1);
        assert_eq!(nanos("0e-30"), 0);
        assert_eq!(nanos("-0.1n"), -1);
    }

    #[test]
    fn equal_values_written_differently_compare_equal() {
        let q = |t: &str| Quantity::parse(t).unwrap();
        assert_eq!(q("4"), q("4000m"));
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("1k"), q("1e3"));
        assert!(q("128Gi") > q("64Gi"));
        assert!(q("64G") < q("64Gi"));
        assert!(q("100m") < q("1"));
        assert_eq!(q("8Gi").to_string(), "8Gi");
    }

    #[test]
    fn rejects_what_the_api_server_rejects() {
        for text in [
            "", "-", "+", ".", "Ki", "m", "1Qi", "64Qi", "1ki", "1gi", "1.2.3", "abc", "1 Gi",
            " 1", "1e", "1e+", "1e1.5", "1Kib", "--1", "1,5", "0x10", "1mm",
        ] {
            assert_eq!(
                Quantity::parse(text),
                Err(QuantityError::Invalid(text.to_owned())),
                "{text:?}"
            );
        }
    }

    #[test]
    fn refuses_values_too_large_to_compare_exactly() {
        for text in [
            "1e40",
            "99999999999999999999999999999999999999999",
            "1e2147483647",
        ] {
            assert!(
                matches!(Quantity::parse(text), Err(QuantityError::TooLarge(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn error_message_quotes_the_text() {
        assert_eq!(
            Quantity::parse("64Qi").unwrap_err().to_string(),
            "\"64Qi\" is not a Kubernetes quantity"
        );
    }

    #[test]
    fn reads_strings_and_numbers_from_json() {
        let q = Quantity::from_json(&serde_json::json!(2)).unwrap();
        assert_eq!(q.nanos(), 2 * UNIT);
        assert_eq!(q.as_str(), "2");
        let q = Quantity::from_json(&serde_json::json!(0.5)).unwrap();
        assert_eq!(q.nanos(), UNIT / 2);
        assert!(Quantity::from_json(&serde_json::json!(true)).is_err());
        let q: Quantity = serde_json::from_str("\"8Gi\"").unwrap();
        assert_eq!(serde_json::to_string(&q).unwrap(), "\"8Gi\"");
    }
}
