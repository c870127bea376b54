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
mod tests {
    use super::*;

    #[test]
    fn completions_name_every_subcommand() {
        let mut buf = Vec::new();
        CompletionsArgs {
            shell: clap_complete::Shell::Bash,
        }
        .run(&mut buf)
        .expect("bash completion");
        let text = String::from_utf8(buf).expect("utf-8");
        for sub in [
            "run",
            "logs",
            "status",
            "detach",
            "policy",
            "geo",
            "completions",
        ] {
            assert!(text.contains(sub), "bash completion lacks {sub}");
        }
        assert!(
            text.contains("--enforce"),
            "bash completion lacks run's flags"
        );
    }

    #[test]
    fn man_pages_cover_subcommands() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pages = write_pages(dir.path()).expect("pages");
        let names: Vec<String> = pages
            .iter()
            .filter_map(|p| Some(p.file_name()?.to_str()?.to_owned()))
            .collect();
        for want in [
            "ollama-egress.1",
            "ollama-egress-run.1",
            "ollama-egress-policy-check.1",
            "ollama-egress-geo-update.1",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing in {names:?}"
            );
        }
        let run = std::fs::read_to_string(dir.path().join("ollama-egress-run.1")).expect("run.1");
        assert!(run.contains(".TH"), "not a man page: {run}");
        assert!(run.contains("enforce"), "run page lacks --enforce");
        assert!(
            !names.iter().any(|n| n.contains("manpages")),
            "hidden command documented"
        );
    }

    #[test]
    fn version_names_commit_and_kernel_object() {
        assert!(LONG_VERSION.starts_with(env!("CARGO_PKG_VERSION")));
        assert!(LONG_VERSION.contains("commit "));
        assert!(LONG_VERSION.contains("kernel object "));
    }
}
