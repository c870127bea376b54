//! `ollama-egress completions SHELL` and `ollama-egress manpages DIR`: shell completions and
//! man pages generated from the clap definitions, so they never drift from `--help`.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use clap::{Args, CommandFactory as _};

use super::Cli;

/// Options of `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write a completion script for (bash, zsh, fish, elvish, powershell).
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

impl CompletionsArgs {
    /// Writes the completion script to `out`.
    pub fn run(&self, out: &mut dyn Write) -> anyhow::Result<()> {
        let mut cmd = Cli::command();
        clap_complete::generate(self.shell, &mut cmd, "ollama-egress", out);
        Ok(())
    }
}

/// Options of `manpages`.
#[derive(Debug, Args)]
pub struct ManpagesArgs {
    /// Directory to write `ollama-egress.1` and one page per subcommand into (created).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

impl ManpagesArgs {
    /// Writes the pages and lists them on `out`.
    pub fn run(&self, out: &mut dyn Write) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        for page in write_pages(&self.dir)? {
            writeln!(out, "{}", page.display())?;
        }
        Ok(())
    }
}

/// Writes `ollama-egress.1` and `ollama-egress-SUB[-SUB].1` for every visible subcommand.
pub fn write_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut written = Vec::new();
    write_tree(&cmd, "ollama-egress", dir, &mut written)?;
    Ok(written)
}

fn write_tree(
    cmd: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let page = cmd.clone().name(name.to_owned());
    let path = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(page).render(&mut buf)?;
    std::fs::write(&path, buf)?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        write_tree(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

/// `--version`: the crate version, the commit it was built from and the kernel object's id.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("OLLAMA_EGRESS_COMMIT"),
    ", kernel object ",
    env!("OLLAMA_EGRESS_KERNEL_BUILD_ID"),
    ")"
);

#[cfg(test)]
mod tests;
