//! `ollama-egress detach`: the one explicit way to stop enforcing.

use std::{io::Write, path::PathBuf};

use clap::Args;

use crate::defaults;
use crate::loader::PinLayout;

/// Options of `detach`.
#[derive(Debug, Args)]
pub struct DetachArgs {
    /// bpffs directory of the pinned enforcement.
    #[arg(long, value_name = "DIR", default_value = defaults::PIN_DIR)]
    pub pin_dir: PathBuf,
}

impl DetachArgs {
    /// Detaches the pinned links from their cgroup and removes every pin.
    pub fn run(&self, out: &mut dyn Write) -> anyhow::Result<()> {
        let pins = PinLayout::new(&self.pin_dir);
        if !self.pin_dir.exists() {
            writeln!(
                out,
                "nothing pinned in {}: not enforcing",
                self.pin_dir.display()
            )?;
            return Ok(());
        }
        let n = pins.detach_and_remove()?;
        writeln!(
            out,
            "detached {n} programs and removed {}: enforcement stopped",
            self.pin_dir.display()
        )?;
        Ok(())
    }
}
