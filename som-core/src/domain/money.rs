//! Exact money: integer minor units of an ISO 4217 currency. Never a float.

use std::fmt;

/// An ISO 4217 currency that SOM knows, with its number of minor-unit digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: &'static str,
    exponent: u8,
}

/// The currencies SOM accepts: code and minor-unit digits per ISO 4217.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("AUD", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MXN", 2),
    ("MYR", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UAH", 2),
    ("USD", 2),
    ("VND", 0),
    ("ZAR", 2),
];

impl Currency {
    /// US dollar, two minor digits.
    pub const USD: Currency = Currency { code: "USD", exponent: 2 };

    /// Looks up a three-letter code, case-insensitively.
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        let upper = code.trim().to_ascii_uppercase();
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == upper)
            .map(|(code, exponent)| Currency { code, exponent: *exponent })
            .ok_or(MoneyError::UnknownCurrency)
    }

    /// The ISO 4217 code, upper case.
    pub fn code(self) -> &'static str {
        self.code
    }

    /// Minor-unit digits: 2 for USD, 0 for JPY, 3 for KWD.
    pub fn exponent(self) -> u8 {
        self.exponent
    }

    /// Every currency SOM accepts.
    pub fn all() -> impl Iterator<Item = Currency> {
        CURRENCIES.iter().map(|(code, exponent)| Currency { code, exponent: *exponent })
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl std::str::FromStr for Currency {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl serde::Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code)
    }
}

impl<'de> serde::Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// Why an amount was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not an ISO 4217 code SOM knows.
    #[error("is not a supported ISO 4217 currency code")]
    UnknownCurrency,
    /// Empty, or not a plain decimal number (no exponent, sign, spaces or separators).
    #[error("must be a decimal number such as 12.50")]
    Malformed,
    /// A negative amount where only non-negative ones are allowed.
    #[error("must not be negative")]
    Negative,
    /// More fraction digits than the currency has minor units.
    #[error("{}", too_many_decimals(*.0))]
    TooManyDecimals(Currency),
    /// The amount does not fit in the range SOM can represent exactly.
    #[error("is too large")]
    Overflow,
    /// Arithmetic between two different currencies.
    #[error("mixes currencies")]
    CurrencyMismatch,
}

fn too_many_decimals(currency: Currency) -> String {
    match currency.exponent {
        0 => format!("{} has no minor unit; use a whole number", currency.code),
        n => format!("has more than {n} decimal places for {}", currency.code),
    }
}

/// An exact amount: integer minor units (cents, fils, yen) of one currency.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

/// Longest amount string considered at all; anything longer cannot fit in i64 minor units.
const MAX_AMOUNT_LEN: usize = 40;

impl Money {
    /// An amount from minor units, e.g. `Money::from_minor(25000, USD)` is 250.00 USD.
    pub const fn from_minor(minor: i64, currency: Currency) -> Money {
        Money { minor, currency }
    }

    /// Zero in `currency`.
    pub const fn zero(currency: Currency) -> Money {
        Money { minor: 0, currency }
    }

    /// Parses a non-negative decimal amount such as `"250"`, `"250.5"` or `"250.00"`.
    ///
    /// Rejects signs, exponents, whitespace, more fraction digits than the currency allows, and
    /// anything beyond i64 minor units.
    pub fn parse(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        if text.len() > MAX_AMOUNT_LEN {
            return Err(if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                MoneyError::Overflow
            } else {
                MoneyError::Malformed
            });
        }
        if let Some(rest) = text.strip_prefix('-') {
            // Reported as negative only when the rest is a well-formed amount.
            return match Money::parse(rest, currency) {
                Ok(m) if m.minor == 0 => Ok(m),
                Ok(_) => Err(MoneyError::Negative),
                Err(e) => Err(e),
            };
        }
        let (int_part, frac_part) = match text.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (text, None),
        };
        let digits_only = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits_only(int_part) {
            return Err(MoneyError::Malformed);
        }
        let frac = match frac_part {
            Some(f) if !digits_only(f) => return Err(MoneyError::Malformed),
            Some(f) => f,
            None => "",
        };
        let exponent = usize::from(currency.exponent);
        // More digits than the currency has are refused even when they are zeros ("1.500" in
        // USD): what a client writes must be what the API's schema describes for it.
        let significant = frac;
        if significant.len() > exponent {
            return Err(MoneyError::TooManyDecimals(currency));
        }
        let mut minor: i64 = 0;
        for b in int_part.bytes() {
            minor =
                minor.checked_mul(10).and_then(|m| m.checked_add(i64::from(b - b'0'))).ok_or(MoneyError::Overflow)?;
        }
        for i in 0..exponent {
            let digit = significant.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
            minor = minor.checked_mul(10).and_then(|m| m.checked_add(digit)).ok_or(MoneyError::Overflow)?;
        }
        Ok(Money { minor, currency })
    }

    /// The amount in minor units.
    pub const fn minor(self) -> i64 {
        self.minor
    }

    /// The currency.
    pub const fn currency(self) -> Currency {
        self.currency
    }

    /// True when the amount is above zero.
    pub const fn is_positive(self) -> bool {
        self.minor > 0
    }

    /// `self + other`, or an error on overflow or a currency mismatch.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch);
        }
        let minor = self.minor.checked_add(other.minor).ok_or(MoneyError::Overflow)?;
        Ok(Money { minor, ..self })
    }

    /// `self × quantity`, or an error on overflow.
    pub fn checked_mul(self, quantity: i64) -> Result<Money, MoneyError> {
        let minor = self.minor.checked_mul(quantity).ok_or(MoneyError::Overflow)?;
        Ok(Money { minor, ..self })
    }

    /// The amount as a decimal string with exactly the currency's digits: `"250.00"`, `"250"`
    /// for JPY, `"1.250"` for KWD. No currency code.
    pub fn amount_string(self) -> String {
        self.amount().to_string()
    }

    /// The amount with exactly the currency's digits, as [`Money::amount_string`] spells it,
    /// for writing into a buffer without a `String` of its own.
    pub fn amount(self) -> Amount {
        Amount(self)
    }
}

/// [`Money::amount`]: displays as `250.00` (no currency code).
#[derive(Debug, Clone, Copy)]
pub struct Amount(Money);

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Amount(money) = self;
        let exponent = u32::from(money.currency.exponent);
        let sign = if money.minor < 0 { "-" } else { "" };
        let abs = money.minor.unsigned_abs();
        if exponent == 0 {
            return write!(f, "{sign}{abs}");
        }
        let scale = 10u64.pow(exponent);
        write!(f, "{sign}{}.{:0width$}", abs / scale, abs % scale, width = exponent as usize)
    }
}

impl fmt::Display for Money {
    /// `250.00 USD`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount(), self.currency.code)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Money {
    /// Serialized as the amount string alone; the currency travels in its own field.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.amount_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cur(code: &str) -> Currency {
        Currency::parse(code).unwrap_or(Currency::USD)
    }

    #[test]
    fn parses_amounts_with_up_to_the_currency_digits() {
        let usd = Currency::USD;
        assert_eq!(Money::parse("250", usd).map(Money::minor), Ok(25000));
        assert_eq!(Money::parse("250.5", usd).map(Money::minor), Ok(25050));
        assert_eq!(Money::parse("250.05", usd).map(Money::minor), Ok(25005));
        assert_eq!(Money::parse("0.01", usd).map(Money::minor), Ok(1));
        assert_eq!(Money::parse("1.500", usd), Err(MoneyError::TooManyDecimals(usd)));
        assert_eq!(Money::parse("1.50", usd).map(Money::minor), Ok(150));
        assert_eq!(Money::parse("1.005", usd), Err(MoneyError::TooManyDecimals(usd)));
        assert_eq!(Money::parse("100", cur("JPY")).map(Money::minor), Ok(100));
        assert_eq!(Money::parse("100.5", cur("JPY")), Err(MoneyError::TooManyDecimals(cur("JPY"))));
        assert_eq!(
            Money::parse("100.5", cur("JPY")).unwrap_err().to_string(),
            "JPY has no minor unit; use a whole number"
        );
        assert_eq!(Money::parse("1.005", usd).unwrap_err().to_string(), "has more than 2 decimal places for USD");
        assert_eq!(Money::parse("1.234", cur("KWD")).map(Money::minor), Ok(1234));
        assert_eq!(Money::parse("1.2345", cur("BHD")), Err(MoneyError::TooManyDecimals(cur("BHD"))));
    }

    #[test]
    fn rejects_malformed_negative_and_huge_amounts() {
        let usd = Currency::USD;
        for bad in ["", ".", "1.", ".5", "1e3", " 1", "1 ", "+1", "1,000", "0x10", "NaN", "١"] {
            assert_eq!(Money::parse(bad, usd), Err(MoneyError::Malformed), "{bad:?}");
        }
        assert_eq!(Money::parse("-1", usd), Err(MoneyError::Negative));
        assert_eq!(Money::parse("92233720368547758.08", usd), Err(MoneyError::Overflow));
        assert_eq!(Money::parse(&"9".repeat(100), usd), Err(MoneyError::Overflow));
        assert_eq!(Money::parse("92233720368547758.07", usd).map(Money::minor), Ok(i64::MAX));
    }

    #[test]
    fn renders_exactly_the_currency_digits() {
        assert_eq!(Money::from_minor(25000, Currency::USD).amount_string(), "250.00");
        assert_eq!(Money::from_minor(5, Currency::USD).amount_string(), "0.05");
        assert_eq!(Money::from_minor(250, cur("JPY")).amount_string(), "250");
        assert_eq!(Money::from_minor(1250, cur("KWD")).amount_string(), "1.250");
        assert_eq!(Money::from_minor(25000, Currency::USD).to_string(), "250.00 USD");
        assert_eq!(Money::from_minor(i64::MIN, Currency::USD).amount_string(), "-92233720368547758.08");
    }

    #[test]
    fn currencies_cover_zero_two_and_three_digit_units() {
        assert_eq!(cur("usd").exponent(), 2);
        assert_eq!(cur("EUR").exponent(), 2);
        assert_eq!(cur("GBP").exponent(), 2);
        assert_eq!(cur("INR").exponent(), 2);
        assert_eq!(cur("JPY").exponent(), 0);
        assert_eq!(cur("BHD").exponent(), 3);
        assert_eq!(cur("KWD").exponent(), 3);
        assert_eq!(Currency::parse("XXX"), Err(MoneyError::UnknownCurrency));
        assert_eq!(Currency::parse(""), Err(MoneyError::UnknownCurrency));
    }

    #[test]
    fn arithmetic_is_checked() {
        let max = Money::from_minor(i64::MAX, Currency::USD);
        assert_eq!(max.checked_add(Money::from_minor(1, Currency::USD)), Err(MoneyError::Overflow));
        assert_eq!(max.checked_mul(2), Err(MoneyError::Overflow));
        assert_eq!(Money::zero(Currency::USD).checked_add(Money::zero(cur("EUR"))), Err(MoneyError::CurrencyMismatch));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,64}") {
            let _ = Money::parse(&s, Currency::USD);
            let _ = Money::parse(&s, cur("KWD"));
            let _ = Currency::parse(&s);
        }

        #[test]
        fn numeric_looking_input_never_panics(s in "-?[0-9]{0,25}(\\.[0-9]{0,6})?") {
            let _ = Money::parse(&s, cur("JPY"));
            let _ = Money::parse(&s, cur("BHD"));
        }

        #[test]
        fn rendering_then_parsing_round_trips(minor in 0i64..=i64::MAX, idx in 0usize..43) {
            let currency = Currency::all().nth(idx % CURRENCIES.len()).unwrap_or(Currency::USD);
            let money = Money::from_minor(minor, currency);
            prop_assert_eq!(Money::parse(&money.amount_string(), currency), Ok(money));
        }

        #[test]
        fn arithmetic_never_panics(a in any::<i64>(), b in any::<i64>()) {
            let x = Money::from_minor(a, Currency::USD);
            let _ = x.checked_add(Money::from_minor(b, Currency::USD));
            let _ = x.checked_mul(b);
            let _ = x.amount_string();
        }
    }
}
