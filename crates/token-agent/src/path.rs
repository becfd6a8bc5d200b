//! Object paths of the per-token objects: a token's name escaped as one D-Bus object path element, the same
//! way on the serving side and in callers.

use crate::OBJECT_PATH;

/// Escapes a string as one D-Bus object path element: every byte outside `[A-Za-z0-9]` becomes `_` and two
/// lowercase hex digits (`-` → `_2d`, `_` → `_5f`). The empty string becomes `_`.
pub fn escape_path_element(name: &str) -> String {
    if name.is_empty() {
        return "_".to_owned();
    }
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("_{byte:02x}"));
        }
    }
    out
}

/// Reverses [`escape_path_element`]; `None` if `element` is not an escaped string.
pub fn unescape_path_element(element: &str) -> Option<String> {
    if element == "_" {
        return Some(String::new());
    }
    if element.is_empty() {
        return None;
    }
    let bytes = element.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => {
                let hex = element.get(i + 1..i + 3)?;
                if !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                    return None;
                }
                let byte = u8::from_str_radix(hex, 16).ok()?;
                if byte.is_ascii_alphanumeric() {
                    return None;
                }
                out.push(byte);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// The object path of a token's object: `/io/allthingstalk/TokenAgent1/token/<escaped name>`.
pub fn token_object_path(name: &str) -> String {
    format!("{OBJECT_PATH}/token/{}", escape_path_element(name))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn escaping_examples() {
        assert_eq!(escape_path_element("main"), "main");
        assert_eq!(escape_path_element("sensor-7"), "sensor_2d7");
        assert_eq!(escape_path_element("site_a"), "site_5fa");
        assert_eq!(token_object_path("a-b"), "/io/allthingstalk/TokenAgent1/token/a_2db");
        assert_eq!(unescape_path_element("sensor_2d7").as_deref(), Some("sensor-7"));
        for bad in ["a-b", "a_2", "a_2D", "a_41", "a_zz", ""] {
            assert_eq!(unescape_path_element(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn escaping_round_trips_and_makes_valid_elements(name in "[A-Za-z0-9_-]{1,64}") {
            let escaped = escape_path_element(&name);
            prop_assert!(escaped.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
            prop_assert_eq!(unescape_path_element(&escaped), Some(name.clone()));
            prop_assert!(zbus::ObjectPath::try_from(token_object_path(&name)).is_ok());
        }

        #[test]
        fn escaping_is_injective(a in "[A-Za-z0-9_-]{1,8}", b in "[A-Za-z0-9_-]{1,8}") {
            prop_assume!(a != b);
            prop_assert_ne!(escape_path_element(&a), escape_path_element(&b));
        }

        #[test]
        fn any_string_round_trips(name in "\\PC{0,20}") {
            prop_assert_eq!(unescape_path_element(&escape_path_element(&name)), Some(name));
        }
    }
}
