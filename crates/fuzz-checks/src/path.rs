//! Object-path elements: `token_agent::escape_path_element` and `unescape_path_element`.

use token_agent::{escape_path_element, token_object_path, unescape_path_element};
use zbus::ObjectPath;

/// Escapes and unescapes `data` (as text); panics when a promise is broken.
pub fn check_path_element(data: &[u8]) {
    let text = String::from_utf8_lossy(data);

    // Any string escapes to a valid, bounded element that unescapes to the same string.
    let escaped = escape_path_element(&text);
    assert!(!escaped.is_empty(), "an empty element for {text:?}");
    assert!(escaped.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "not a path element: {escaped:?}");
    assert!(escaped.len() <= 3 * text.len().max(1), "{} bytes escape to {}", text.len(), escaped.len());
    assert_eq!(unescape_path_element(&escaped).as_deref(), Some(&*text), "unescape(escape(x)) == x");
    let path = token_object_path(&text);
    assert!(ObjectPath::try_from(path.as_str()).is_ok(), "not a D-Bus object path: {path:?}");

    // The other way: an element that unescapes is the one escaping gives back (one spelling per name).
    if let Some(name) = unescape_path_element(&text) {
        assert_eq!(escape_path_element(&name), text, "escape(unescape(x)) == x");
    }
}
