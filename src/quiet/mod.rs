//! Ignore rules (pure): what keeps controller noise out of git history.
//!
//! In: a rule entry's `ignoreFields` (JSON pointers) and `ignoreManagers`
//! (field-manager names), merged per target over every rule entry that
//! selects an object. Out: [`Ignore`], which
//! - strips the ignored fields from the clean object before it is written
//!   and hashed ([`Ignore::strip`]), so they are never in the file and a
//!   change to them alone hashes the same (no commit);
//! - tells whether a change was made only by ignored managers
//!   ([`Ignore::only_ignored_changes`]), in which case it makes no commit,
//!   while the file keeps those fields and shows their latest value the
//!   next time another change is written.
//!
//! See `docs/keeping-history-quiet.md` for the user's view.

pub mod managed;
pub mod pointer;

use serde_json::Value;

pub use pointer::{Pointer, PointerError, Step};

/// The ignore rules one target applies to one object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ignore {
    /// Sorted and deduplicated.
    fields: Vec<Pointer>,
    /// Sorted and deduplicated.
    managers: Vec<String>,
}

impl Ignore {
    /// Compiles a rule entry's lists; None when both are empty, so that an
    /// entry without ignores costs nothing on the event path.
    pub fn compile(fields: &[String], managers: &[String]) -> Result<Option<Self>, PointerError> {
        if fields.is_empty() && managers.is_empty() {
            return Ok(None);
        }
        let fields = fields.iter().map(|text| Pointer::parse(text)).collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Self::new(fields, managers.to_vec())))
    }

    fn new(mut fields: Vec<Pointer>, mut managers: Vec<String>) -> Self {
        fields.sort();
        fields.dedup();
        managers.sort();
        managers.dedup();
        Self { fields, managers }
    }

    /// Both sets of rules: an object several entries of one target select
    /// is quiet where any of them says so.
    pub fn union(&self, other: &Self) -> Self {
        Self::new(
            self.fields.iter().chain(&other.fields).cloned().collect(),
            self.managers.iter().chain(&other.managers).cloned().collect(),
        )
    }

    pub fn fields(&self) -> &[Pointer] {
        &self.fields
    }

    pub fn managers(&self) -> &[String] {
        &self.managers
    }

    /// Removes the ignored fields from a clean (sanitized) object.
    pub fn strip(&self, clean: &mut Value) {
        for pointer in &self.fields {
            pointer.remove_from(clean);
        }
    }

    /// Whether going from `before` to `after` (clean objects) changed only
    /// ignored fields and fields that only ignored managers own, as the raw
    /// new object's `managedFields` say. False without ignored managers
    /// unless nothing outside the ignored fields changed.
    pub fn only_ignored_changes(&self, before: &Value, after: &Value, raw_after: &Value) -> bool {
        let owners = managed::Owners::new(raw_after, &self.managers);
        managed::only_ignored_changes(before, after, &owners, &self.fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn no_lists_compile_to_nothing() {
        assert_eq!(Ignore::compile(&[], &[]), Ok(None));
        assert!(Ignore::compile(&["spec".into()], &[]).is_err());
    }

    #[test]
    fn union_sorts_and_deduplicates() {
        let a = Ignore::compile(&["/spec/replicas".into()], &["hpa".into()]).unwrap().unwrap();
        let b =
            Ignore::compile(&["/metadata/labels/x".into(), "/spec/replicas".into()], &[]).unwrap().unwrap();
        let both = a.union(&b);
        let fields: Vec<String> = both.fields().iter().map(ToString::to_string).collect();
        assert_eq!(fields, vec!["/metadata/labels/x", "/spec/replicas"]);
        assert_eq!(both.managers(), ["hpa"]);
    }

    #[test]
    fn strip_removes_every_field() {
        let ignore = Ignore::compile(
            &["/spec/replicas".into(), "/metadata/annotations/a~1b".into(), "/not/there".into()],
            &[],
        )
        .unwrap()
        .unwrap();
        let mut object =
            json!({"metadata": {"name": "n", "annotations": {"a/b": "1"}}, "spec": {"replicas": 3}});
        ignore.strip(&mut object);
        assert_eq!(object, json!({"metadata": {"name": "n"}}));
    }
}
