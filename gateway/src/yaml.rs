//! How every Qiao file is read.

/// Parses YAML the way every Qiao file is read: YAML 1.2 booleans only (`true`/`false`,
/// so a path named `y` or `n` stays a string) and duplicate keys refused.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options(text, serde_saphyr::options! { strict_booleans: true })
}
