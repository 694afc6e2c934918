//! One commit from a set of file changes on top of a parent commit.
//!
//! In: the parent (or `None` for a root commit), [`FileChange`]s and a
//! [`CommitSpec`]. Out: the new commit id, or `None` when nothing would
//! change, in which case no object at all is written.
//!
//! Cost is proportional to the depth of the changed paths, not to the size
//! of the tree: only trees on a changed path are read and rewritten, via
//! gix's plumbing tree editor.

use gix::ObjectId;
use gix::bstr::ByteSlice;
use gix::objs::tree::EntryKind;

use super::error::Context;
use super::path::{self, Op, Planned};
use super::read::Lookup;
use super::{CommitSpec, CommitTime, FileChange, Identity, LocalRepo, RepoError};
use crate::worker::signing::{SigningError, SigningKey};

/// A change that survived the no-op check: bytes to place, or a file to drop.
enum Edit<'a> {
    Upsert(&'a Planned<'a>, &'a [u8]),
    Link(&'a Planned<'a>, ObjectId),
    Remove(&'a Planned<'a>),
}

impl LocalRepo {
    /// Writes blobs, edits the parent's tree (creating folders as needed; a
    /// folder left empty by a delete disappears) and writes a commit with
    /// `parent` as its only parent (`None` = a root commit).
    ///
    /// Returns `None` and writes nothing if the tree would not change
    /// (unless `spec.allow_empty`): deleting a missing file and writing
    /// identical bytes are no-ops.
    /// The last change per path wins; changes where one path lies inside
    /// another, replacing a folder by a file or a file by a folder, and
    /// deleting a folder are refused as [`RepoError::PathConflict`].
    pub fn commit(
        &self,
        parent: Option<ObjectId>,
        changes: &[FileChange],
        spec: &CommitSpec<'_>,
    ) -> Result<Option<ObjectId>, RepoError> {
        let plan = path::plan(changes)?;
        let time = spec.time.map_or_else(gix::date::Time::now_local_or_utc, |t: CommitTime| {
            gix::date::Time::new(t.seconds, t.offset_seconds)
        });
        let author = signature(spec.author, time)?;
        let committer = signature(spec.committer, time)?;
        let base_tree = match parent {
            Some(parent) => self.commit_tree(parent)?,
            None => ObjectId::empty_tree(self.repo.object_hash()),
        };

        // Check everything before writing anything, so a refused change
        // leaves no stray blobs behind.
        let mut edits = Vec::with_capacity(plan.len());
        for change in &plan {
            if let Some(edit) = self.check(base_tree, change)? {
                edits.push(edit);
            }
        }
        if edits.is_empty() && !spec.allow_empty {
            return Ok(None);
        }

        let root = if base_tree.is_empty_tree() {
            gix::objs::Tree::empty()
        } else {
            let tree = self.find_tree(base_tree)?;
            tree.decode().context(|| format!("decode tree {base_tree}"))?.into_owned()
        };
        // The plumbing editor: gix's validating editor also checks that every
        // entry of every rewritten tree exists (a stat per entry when loose;
        // measured 15-50% slower per commit, 2x for deletes); our paths are
        // validated up front and every id we insert is written just before.
        let mut editor = gix::objs::tree::Editor::new(root, &self.repo.objects, self.repo.object_hash());
        for edit in &edits {
            match *edit {
                Edit::Upsert(change, content) => {
                    let id = self
                        .repo
                        .write_blob(content)
                        .context(|| format!("write blob for {:?}", change.path))?;
                    editor.upsert(&change.components, EntryKind::Blob, id.detach())
                }
                Edit::Link(change, id) => editor.upsert(&change.components, EntryKind::Blob, id),
                Edit::Remove(change) => editor.remove(&change.components),
            }
            .context(|| format!("edit tree at {:?}", change_path(edit)))?;
        }
        let tree = editor
            .write(|tree| self.repo.write_object(tree).map(|id| id.detach()))
            .context(|| format!("write trees on top of {base_tree}"))?;
        if tree == base_tree && !spec.allow_empty {
            return Ok(None);
        }

        let mut commit = gix::objs::Commit {
            tree,
            parents: parent.into_iter().collect(),
            author,
            committer,
            encoding: None,
            message: message(spec.message).into(),
            extra_headers: Vec::new(),
        };
        if let Some(key) = spec.signer {
            sign(&mut commit, key).map_err(|source| RepoError::Signing {
                op: format!("sign the commit on top of {parent:?}"),
                source,
            })?;
        }
        let id = self.repo.write_object(&commit).context(|| format!("write commit on top of {parent:?}"))?;
        let id = id.detach();
        if let Some(key) = spec.signer {
            self.verify_signature(id, key)?;
        }
        Ok(Some(id))
    }

    /// Checks the signature of commit `id` as a verifier would: from the
    /// bytes in the object database, not from what was meant to be written.
    pub(super) fn verify_signature(&self, id: ObjectId, key: &SigningKey) -> Result<(), RepoError> {
        let op = || format!("verify the signature of commit {id}");
        let object = self.repo.find_object(id).context(op)?;
        let found = gix::objs::CommitRefIter::signature(&object.data, self.repo.object_hash()).context(op)?;
        let Some((signature, signed)) = found else {
            let detail = "the written commit has no gpgsig header".to_owned();
            return Err(RepoError::Signing {
                op: op(),
                source: SigningError::NotVerified { format: key.format(), detail },
            });
        };
        key.verify(&signed.to_bstring(), &signature).map_err(|source| RepoError::Signing { op: op(), source })
    }

    /// Compares one planned change with the base tree: `None` if it changes
    /// nothing, an error if it would replace a folder or a file by the other.
    fn check<'a>(&self, base_tree: ObjectId, change: &'a Planned<'a>) -> Result<Option<Edit<'a>>, RepoError> {
        let found = self.lookup(base_tree, &change.components)?;
        let conflict = |reason: String| RepoError::PathConflict { path: change.path.to_owned(), reason };
        match (change.op, found) {
            (Op::Delete, Lookup::Missing | Lookup::Blocked { .. }) => Ok(None),
            (Op::Delete, Lookup::Found { mode, .. }) if mode.is_tree() => {
                Err(conflict("it is a folder; only files can be deleted".into()))
            }
            (Op::Delete, Lookup::Found { .. }) => Ok(Some(Edit::Remove(change))),
            (Op::Write(_) | Op::Restore(_), Lookup::Blocked { depth }) => {
                Err(conflict(format!("{:?} is a file, not a folder", change.components[..depth].join("/"))))
            }
            (Op::Write(_) | Op::Restore(_), Lookup::Found { mode, .. }) if mode.is_tree() => {
                Err(conflict("it is a folder; a file cannot replace it".into()))
            }
            (Op::Restore(wanted), found) => {
                if let Lookup::Found { mode, id } = found
                    && mode.kind() == EntryKind::Blob
                    && id == wanted
                {
                    return Ok(None);
                }
                if !self.repo.has_object(wanted) {
                    return Err(RepoError::MissingObject { kind: "blob", id: wanted });
                }
                Ok(Some(Edit::Link(change, wanted)))
            }
            (Op::Write(content), found) => {
                if let Lookup::Found { mode, id } = found
                    && mode.kind() == EntryKind::Blob
                    && id == Self::blob_id(content)
                {
                    return Ok(None);
                }
                Ok(Some(Edit::Upsert(change, content)))
            }
        }
    }
}

fn change_path<'a>(edit: &'a Edit<'a>) -> &'a str {
    match edit {
        Edit::Upsert(change, _) | Edit::Link(change, _) | Edit::Remove(change) => change.path,
    }
}

/// Signs `commit` as `git commit -S` does: the signature covers the commit
/// object exactly as it serialises without the signature, and goes in the
/// `gpgsig` header, each line after the first indented by one space (gix
/// folds multi-line header values that way; git unfolds them to verify).
fn sign(commit: &mut gix::objs::Commit, key: &SigningKey) -> Result<(), SigningError> {
    use gix::objs::WriteTo as _;
    let mut payload = Vec::with_capacity(commit.size() as usize);
    commit
        .write_to(&mut payload)
        .map_err(|e| SigningError::Sign { format: key.format(), detail: e.to_string() })?;
    let signature = key.sign(&payload)?;
    // The header value holds no final newline; the header's own ends it.
    let value = signature.trim_end_matches('\n');
    commit.extra_headers.push((gix::objs::commit::SIGNATURE_FIELD_NAME.into(), value.into()));
    Ok(())
}

/// Git ends commit messages with a newline; add it if the caller did not.
fn message(text: &str) -> String {
    let mut message = text.to_owned();
    if !message.ends_with('\n') {
        message.push('\n');
    }
    message
}

/// An author/committer line; refuses what would break the commit header.
fn signature(who: &Identity, time: gix::date::Time) -> Result<gix::actor::Signature, RepoError> {
    for (value, what) in [(&who.name, "name"), (&who.email, "email")] {
        let bad = |reason| RepoError::InvalidIdentity { value: value.clone(), reason };
        if value.as_bytes().find_byteset(b"<>\n\0").is_some() {
            return Err(bad("'<', '>', newlines and NUL are not allowed"));
        }
        if what == "name" && value.trim().is_empty() {
            return Err(bad("the name must not be empty"));
        }
    }
    Ok(gix::actor::Signature { name: who.name.as_str().into(), email: who.email.as_str().into(), time })
}
