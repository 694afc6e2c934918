//! The age X25519 recipients a Secret is sealed for (`age1…`).

use age::x25519::Recipient;

use super::SopsError;

/// A non-empty list of distinct age X25519 recipients, in the order given:
/// the order of the `sops.age` entries.
#[derive(Clone, Debug)]
pub struct Recipients(Vec<Recipient>);

impl Recipients {
    /// Parses `age1…` strings (surrounding whitespace ignored). The error
    /// names the first bad entry and its position; recipients are public keys,
    /// so naming them leaks nothing.
    pub fn parse<I, S>(entries: I) -> Result<Self, SopsError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out: Vec<Recipient> = Vec::new();
        for (index, entry) in entries.into_iter().enumerate() {
            let entry = entry.as_ref().trim();
            let recipient: Recipient = entry.parse().map_err(|reason| SopsError::InvalidRecipient {
                index,
                entry: entry.to_owned(),
                reason,
            })?;
            if out.contains(&recipient) {
                return Err(SopsError::DuplicateRecipient { entry: entry.to_owned() });
            }
            out.push(recipient);
        }
        if out.is_empty() {
            return Err(SopsError::NoRecipients);
        }
        Ok(Recipients(out))
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Recipient> {
        self.0.iter()
    }

    /// The recipients as `age1…` strings, as the file names them.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(Recipient::to_string).collect()
    }
}
