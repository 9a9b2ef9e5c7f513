//! How much a registry can make berth read, unpack and follow, and how much
//! of a registry's own text berth repeats in its errors.

use serde::Deserialize;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Pull limits. The defaults suit a node: no real image comes near them,
/// and a hostile one is stopped long before it fills memory or the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest manifest, index or image config (read into memory): 4 MiB,
    /// as containerd allows.
    pub max_metadata_bytes: u64,
    /// Largest layer, compressed or uncompressed: 8 GiB. The biggest
    /// common images (CUDA, ML runtimes) have single layers of 3-5 GiB.
    pub max_layer_bytes: u64,
    /// Most bytes the layers one pull unpacks may take uncompressed (layers
    /// already on the node are not counted): 16 GiB, twice the largest
    /// layer, above the 10-15 GiB of the largest images seen in practice.
    pub max_image_bytes: u64,
    /// Redirects followed for one blob download (registries send blobs to
    /// storage, sometimes through a CDN hop): 5. Nothing else is redirected.
    pub max_blob_redirects: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_metadata_bytes: 4 * MIB,
            max_layer_bytes: 8 * GIB,
            max_image_bytes: 16 * GIB,
            max_blob_redirects: 5,
        }
    }
}

/// A byte count as people write limits: "4 MiB", "1536 KiB", "100 bytes".
pub fn show_bytes(n: u64) -> String {
    for (unit, name) in [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
        if n >= unit && n.is_multiple_of(unit) {
            return format!("{} {name}", n / unit);
        }
    }
    format!("{n} bytes")
}

/// At most this much of a registry's text goes into an error message.
pub const QUOTE_LIMIT: usize = 200;

/// Remote text for an error message: quoted, with control characters
/// escaped, and cut to [`QUOTE_LIMIT`] bytes (saying how long it was), so a
/// registry can neither flood a gRPC status nor forge log lines.
pub fn quote(text: &[u8]) -> String {
    quote_part(text, &format!("{} bytes", text.len()))
}

/// Like [`quote`] for the start of a longer text, `whole` saying how long
/// that is ("5242880 bytes", "more than 16 KiB").
pub fn quote_part(text: &[u8], whole: &str) -> String {
    let cut = text.len() > QUOTE_LIMIT;
    let shown = String::from_utf8_lossy(&text[..text.len().min(QUOTE_LIMIT)]);
    let shown = if cut {
        // Not a replacement mark for a character the cut split.
        format!("{}...", shown.trim_end_matches('\u{fffd}'))
    } else {
        shown.into_owned()
    };
    if cut || !whole.starts_with(&format!("{} ", text.len())) {
        format!("{shown:?} ({whole})")
    } else {
        format!("{shown:?}")
    }
}

/// Like [`quote`] for text that is not quoted itself, such as a parser's
/// message that embeds remote input: cut to a few hundred bytes.
pub fn cut(text: &str) -> String {
    const MAX: usize = 2 * QUOTE_LIMIT;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_show_in_the_largest_whole_unit() {
        assert_eq!(show_bytes(4 * MIB), "4 MiB");
        assert_eq!(show_bytes(8 * GIB), "8 GiB");
        assert_eq!(show_bytes(1536 * KIB), "1536 KiB");
        assert_eq!(show_bytes(100), "100 bytes");
        assert_eq!(show_bytes(0), "0 bytes");
    }

    #[test]
    fn remote_text_is_quoted_escaped_and_cut() {
        assert_eq!(quote(b"not found"), "\"not found\"");
        assert_eq!(quote(b"a\nb\x1b[31m"), "\"a\\nb\\u{1b}[31m\"");
        let long = quote(&vec![b'A'; 5 << 20]);
        assert!(long.len() < QUOTE_LIMIT + 40, "{}", long.len());
        assert!(long.ends_with("...\" (5242880 bytes)"), "{long}");
        assert_eq!(
            quote_part(b"start", "more than 16 KiB"),
            "\"start\" (more than 16 KiB)"
        );
        assert_eq!(quote_part(b"all", "3 bytes"), "\"all\"");
        // A character cut at the limit does not leave half of itself.
        let mut text = vec![b'a'; QUOTE_LIMIT - 1];
        text.extend("é and more".as_bytes());
        assert!(!quote(&text).contains('\u{fffd}'));

        assert_eq!(cut("short"), "short");
        let long = cut(&"é".repeat(1000));
        assert!(long.len() < 2 * QUOTE_LIMIT + 30, "{}", long.len());
        assert!(long.ends_with("... (2000 bytes)"), "{long}");
    }
}
