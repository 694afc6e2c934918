//! Fault injection for the supervision tests (`tests/ha_supervision.rs`).
//! **For tests only**: never set `GITOPS_REVERSER_FAULT_FILE` in a real
//! deployment.
//!
//! When that variable names a file, the vital loops read it at the points
//! that call [`fires`] and act out a fault the file names, once per process.
//! A test arms a fault by writing its word into the file of one replica, at
//! the moment it chooses. Unset, each check is one read of a static.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// The variable that names the fault file.
pub const FAULT_FILE_VAR: &str = "GITOPS_REVERSER_FAULT_FILE";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The controller panics at the start of a pass.
    PanicController,
    /// The controller's pass hangs where it reconciles the watches, for ever.
    WedgeWatchManager,
}

impl Fault {
    const ALL: [Fault; 2] = [Fault::PanicController, Fault::WedgeWatchManager];

    /// The word a test writes into the file.
    pub fn word(self) -> &'static str {
        match self {
            Fault::PanicController => "panic-controller",
            Fault::WedgeWatchManager => "wedge-watch-manager",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|f| *f == self).unwrap_or(0)
    }
}

static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
static FIRED: [AtomicBool; Fault::ALL.len()] = [const { AtomicBool::new(false) }; Fault::ALL.len()];

/// True the first time `fault` is armed in the fault file (and never again).
pub fn fires(fault: Fault) -> bool {
    let Some(path) = FILE.get_or_init(|| std::env::var_os(FAULT_FILE_VAR).map(PathBuf::from)) else {
        return false;
    };
    if FIRED[fault.index()].load(Ordering::Relaxed) {
        return false;
    }
    let armed = std::fs::read_to_string(path).is_ok_and(|text| armed_in(&text, fault));
    armed && !FIRED[fault.index()].swap(true, Ordering::Relaxed)
}

/// Whether the file's `text` names `fault`.
fn armed_in(text: &str, fault: Fault) -> bool {
    text.split_whitespace().any(|word| word == fault.word())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_is_armed_only_by_its_own_word() {
        assert!(armed_in("panic-controller\n", Fault::PanicController));
        assert!(armed_in("x wedge-watch-manager y", Fault::WedgeWatchManager));
        assert!(!armed_in("panic-controller", Fault::WedgeWatchManager));
        assert!(!armed_in("panic-controllers", Fault::PanicController));
        assert!(!armed_in("", Fault::PanicController));
    }
}
