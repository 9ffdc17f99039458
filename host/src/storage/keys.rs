//! Composite state keys: `plugin id (u32 BE) ‖ table name ‖ 00 ‖ key`.

use super::row_bytes::RowBytes;
use crate::limits::TABLE_NAME_SIZE_BYTES_MAX;

/// Checks a plugin-supplied table name: 1..=64 bytes of `[a-z0-9_.-]`.
/// The rule keeps `00` out of names, which makes composite keys unambiguous.
pub fn validate_table_name(table: &str) -> Result<(), String> {
    let ok = !table.is_empty()
        && table.len() <= TABLE_NAME_SIZE_BYTES_MAX
        && table
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        let shown: String = table.chars().take(80).collect();
        Err(shown)
    }
}

/// The prefix of every key of (`plugin_id`, `table`): `id ‖ table ‖ 00`.
pub(crate) fn table_prefix(plugin_id: u32, table: &str) -> RowBytes {
    RowBytes::concat(&[&plugin_id.to_be_bytes(), table.as_bytes(), &[0]])
}

/// The length of [`table_prefix`] (plugin id, table, `00`), without building it.
pub(crate) fn table_prefix_len(table: &str) -> usize {
    size_of::<u32>() + table.len() + 1
}

/// The full state key of (`plugin_id`, `table`, `key`), built in place
/// when it is short (no allocation on the command path).
pub(crate) fn state_row_key(plugin_id: u32, table: &str, key: &[u8]) -> RowBytes {
    RowBytes::concat(&[&plugin_id.to_be_bytes(), table.as_bytes(), &[0], key])
}

/// The first key past every key of (`plugin_id`, `table`): `id ‖ table ‖ 01`.
pub(crate) fn table_end(plugin_id: u32, table: &str) -> RowBytes {
    RowBytes::concat(&[&plugin_id.to_be_bytes(), table.as_bytes(), &[1]])
}

/// The first key past every key of `plugin_id`.
pub(crate) fn plugin_end(plugin_id: u32) -> Vec<u8> {
    match plugin_id.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xFF; 5],
    }
}

/// Splits a full state key into (table, key).
pub(crate) fn split_state_key(full: &[u8]) -> Option<(&str, &[u8])> {
    let rest = full.get(4..)?;
    let nul = rest.iter().position(|&b| b == 0)?;
    let table = std::str::from_utf8(&rest[..nul]).ok()?;
    Some((table, &rest[nul + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_are_refused() {
        for bad in ["", "A", "a/b", "a\0b", "../x", "a b", &"x".repeat(65)] {
            assert!(validate_table_name(bad).is_err(), "{bad:?}");
        }
        for good in ["orders", "a.b-c_d", "0"] {
            assert!(validate_table_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn composite_keys_split_back() {
        let k = state_row_key(7, "orders", b"\0\x01key");
        assert_eq!(k.as_slice(), b"\0\0\0\x07orders\0\0\x01key".as_slice());
        assert_eq!(
            split_state_key(&k),
            Some(("orders", b"\0\x01key".as_slice()))
        );
        let long_key = [9u8; 100];
        let long = state_row_key(7, "orders", &long_key);
        assert_eq!(&long[..11], b"\0\0\0\x07orders\0".as_slice());
        assert_eq!(&long[11..], long_key.as_slice());
        for key in [&k, &long] {
            assert!(key.as_slice() < table_end(7, "orders").as_slice());
            assert!(key.as_slice() >= table_prefix(7, "orders").as_slice());
            assert!(key.as_slice() < table_prefix(7, "orders0").as_slice());
        }
        assert_eq!(table_prefix(7, "orders").as_slice(), &long[..11]);
        assert_eq!(table_prefix_len("orders"), 11);
    }
}
