//! Fixed-width base36 of big-endian byte strings, as swarm's join tokens
//! print them (Go's `big.Int.Text(36)`, zero-padded), but canonical: only
//! lowercase digits are accepted, so one value has exactly one spelling.

const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Why a base36 string did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The character at this (character) index is not in `[0-9a-z]`.
    Charset { position: usize },
    /// The value does not fit the output width.
    Overflow,
}

/// Encodes `bytes` (big-endian) as lowercase base36, left-padded with `0`
/// to `width` characters. `width` must be enough for the largest value of
/// that many bytes (50 for 32 bytes, 25 for 16), or the result is longer.
pub(crate) fn encode(bytes: &[u8], width: usize) -> String {
    let mut num = bytes.to_vec();
    let mut digits = Vec::with_capacity(width);
    // Schoolbook division by 36, least significant digit first.
    while num.iter().any(|&b| b != 0) {
        let mut rem: u32 = 0;
        for byte in num.iter_mut() {
            let acc = (rem << 8) | u32::from(*byte);
            // acc < 36 * 256, so the quotient fits a byte.
            *byte = (acc / 36) as u8;
            rem = acc % 36;
        }
        digits.push(ALPHABET[rem as usize]);
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.iter().rev().map(|&d| char::from(d)).collect()
}

/// Decodes lowercase base36 into an `N`-byte big-endian value.
pub(crate) fn decode<const N: usize>(text: &str) -> Result<[u8; N], DecodeError> {
    let mut out = [0u8; N];
    for (position, c) in text.chars().enumerate() {
        let digit = match c {
            '0'..='9' => u32::from(c) - u32::from('0'),
            'a'..='z' => u32::from(c) - u32::from('a') + 10,
            _ => return Err(DecodeError::Charset { position }),
        };
        // out = out * 36 + digit, carried from the least significant byte.
        let mut carry = digit;
        for byte in out.iter_mut().rev() {
            let acc = u32::from(*byte) * 36 + carry;
            *byte = (acc & 0xff) as u8;
            carry = acc >> 8;
        }
        if carry != 0 {
            return Err(DecodeError::Overflow);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        assert_eq!(encode(&[0], 3), "000");
        assert_eq!(encode(&[35], 1), "z");
        assert_eq!(encode(&[1, 0], 0), "74"); // 256 = 7*36 + 4
        assert_eq!(decode::<2>("74"), Ok([1, 0]));
        assert_eq!(decode::<1>("73"), Ok([255]));
        assert_eq!(decode::<1>("74"), Err(DecodeError::Overflow));
        assert_eq!(decode::<1>("0A"), Err(DecodeError::Charset { position: 1 }));
    }

    #[test]
    fn widths_fit_the_largest_values() {
        assert_eq!(encode(&[0xff; 32], 50).len(), 50);
        assert_eq!(encode(&[0xff; 16], 25).len(), 25);
    }

    proptest! {
        #[test]
        fn round_trips_32(bytes in prop::array::uniform32(any::<u8>())) {
            let text = encode(&bytes, 50);
            prop_assert_eq!(text.len(), 50);
            prop_assert_eq!(decode::<32>(&text), Ok(bytes));
        }

        #[test]
        fn round_trips_16(bytes in prop::array::uniform16(any::<u8>())) {
            let text = encode(&bytes, 25);
            prop_assert_eq!(text.len(), 25);
            prop_assert_eq!(decode::<16>(&text), Ok(bytes));
        }
    }
}
