//! Fixed-point arithmetic: every amount is an integer, every product is
//! computed in `i128` with checked operations, and every overflow becomes
//! an `overflow` error (never a panic, never a silent wrap).
//!
//! Rounding is always explicit ([`div_floor`], [`div_ceil`], [`div_trunc`])
//! and each call site says which way it rounds and why.

use keel_guest::Error;

/// Basis points in one (margin ratios are in basis points).
pub const BPS: i128 = 10_000;
/// Parts per million in one (funding rates are in parts per million).
pub const PPM: i128 = 1_000_000;
/// Scale of the cumulative funding indexes: an index is quote units owed
/// per unit of size, times `FUNDING_INDEX_SCALE`.
pub const FUNDING_INDEX_SCALE: i128 = 1_000_000_000_000;
// The per-unit funding of one application, `mark * rate_ppm / PPM`, is
// exact at this scale: `mark * rate_ppm * (FUNDING_INDEX_SCALE / PPM)`.
const _: () = assert!(FUNDING_INDEX_SCALE % PPM == 0);

/// The error every overflow becomes.
pub fn overflow(what: &str) -> Error {
    Error::new(
        "overflow",
        format!("{what} is outside the fixed-point range; use smaller sizes, prices or amounts"),
    )
}

/// `a + b`, or an overflow error naming `what`.
pub fn add(a: i128, b: i128, what: &str) -> Result<i128, Error> {
    a.checked_add(b).ok_or_else(|| overflow(what))
}

/// `a - b`, or an overflow error naming `what`.
pub fn sub(a: i128, b: i128, what: &str) -> Result<i128, Error> {
    a.checked_sub(b).ok_or_else(|| overflow(what))
}

/// `a * b`, or an overflow error naming `what`.
pub fn mul(a: i128, b: i128, what: &str) -> Result<i128, Error> {
    a.checked_mul(b).ok_or_else(|| overflow(what))
}

/// `a / b` rounded toward negative infinity; `b > 0`.
pub fn div_floor(a: i128, b: i128, what: &str) -> Result<i128, Error> {
    debug_assert!(b > 0);
    a.checked_div_euclid(b).ok_or_else(|| overflow(what))
}

/// `a / b` rounded toward positive infinity; `b > 0`.
pub fn div_ceil(a: i128, b: i128, what: &str) -> Result<i128, Error> {
    let neg = a.checked_neg().ok_or_else(|| overflow(what))?;
    div_floor(neg, b, what)?
        .checked_neg()
        .ok_or_else(|| overflow(what))
}

/// `a / b` rounded toward zero; `b != 0`.
pub fn div_trunc(a: i128, b: i128, what: &str) -> Result<i128, Error> {
    a.checked_div(b).ok_or_else(|| overflow(what))
}

/// Narrows to the `i64` range amounts are stored in.
pub fn to_i64(v: i128, what: &str) -> Result<i64, Error> {
    i64::try_from(v).map_err(|_| overflow(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_directions() {
        assert_eq!(div_floor(7, 2, "x").unwrap(), 3);
        assert_eq!(div_floor(-7, 2, "x").unwrap(), -4);
        assert_eq!(div_ceil(7, 2, "x").unwrap(), 4);
        assert_eq!(div_ceil(-7, 2, "x").unwrap(), -3);
        assert_eq!(div_ceil(6, 2, "x").unwrap(), 3);
        assert_eq!(div_trunc(-7, 2, "x").unwrap(), -3);
    }

    #[test]
    fn overflow_is_an_error() {
        assert_eq!(mul(i128::MAX, 2, "x").unwrap_err().code, "overflow");
        assert_eq!(div_ceil(i128::MIN, 2, "x").unwrap_err().code, "overflow");
        assert_eq!(
            to_i64(i128::from(i64::MAX) + 1, "x").unwrap_err().code,
            "overflow"
        );
    }
}
