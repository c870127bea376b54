//! `cargo xtask fuzz`: runs every cargo-fuzz target of `fuzz/` for a bounded time and fails
//! when one finds a crash.
//!
//! Each target starts from its checked-in seeds (`fuzz/corpus/<target>/`, read only) and a
//! working corpus kept between runs in `fuzz/target/corpus/<target>/` (where libFuzzer adds
//! what it finds). Crashing inputs land in `fuzz/artifacts/<target>/`; libFuzzer's output goes
//! to `fuzz/target/fuzz-logs/<target>.log`. Needs the nightly toolchain; installs cargo-fuzz
//! when it is missing. Root is not needed.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::setup::sh;

/// Options of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct Args {
    /// Seconds to run each target.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Run only this target (repeatable; default: every target in fuzz/fuzz_targets).
    #[arg(long = "target", value_name = "NAME")]
    targets: Vec<String>,
    /// Extra libFuzzer options, e.g. `-- -max_len=8192`.
    #[arg(last = true)]
    libfuzzer_args: Vec<String>,
}

/// What one target's run did.
struct Outcome {
    target: String,
    stats: Stats,
    artifacts: Vec<PathBuf>,
    log: PathBuf,
    success: bool,
}

/// Numbers from libFuzzer's output (`-print_final_stats=1` and its status lines).
#[derive(Default, Debug, PartialEq, Eq)]
struct Stats {
    runs: Option<u64>,
    exec_per_sec: Option<u64>,
    new_units: Option<u64>,
    cov: Option<u64>,
    features: Option<u64>,
    corpus: Option<u64>,
}

/// Runs the targets, each for `args.seconds`; fails naming the artifacts when any crashed.
pub fn run(args: Args) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf();
    let fuzz_dir = root.join("fuzz");
    let all = list_targets(&fuzz_dir)?;
    let targets = if args.targets.is_empty() {
        all
    } else {
        for t in &args.targets {
            if !all.contains(t) {
                bail!("no fuzz target {t:?}; the targets are: {}", all.join(", "));
            }
        }
        args.targets.clone()
    };
    ensure_tools()?;

    eprintln!("xtask fuzz: building {}", targets.join(", "));
    sh(&mut fuzz_command(&root, "build", &fuzz_dir))?;

    let scratch = scratch_dir(&fuzz_dir);
    let mut outcomes = Vec::new();
    for target in &targets {
        let outcome = run_target(&root, &fuzz_dir, &scratch, target, &args);
        let _ = fs::remove_dir_all(&scratch);
        outcomes.push(outcome?);
    }

    print_summary(&outcomes, args.seconds);
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.success).collect();
    if failed.is_empty() {
        return Ok(());
    }
    for o in &failed {
        eprintln!(
            "\n=== {} failed; last lines of {}:",
            o.target,
            o.log.display()
        );
        eprintln!("{}", tail(&o.log, 40));
        for a in &o.artifacts {
            eprintln!("crashing input: {}", a.display());
            eprintln!(
                "reproduce:      (cd fuzz && AYA_BUILD_SKIP=1 cargo +{} fuzz run {} {})",
                crate::setup::pinned_nightly().unwrap_or_else(|_| "nightly".to_owned()),
                o.target,
                a.strip_prefix(&fuzz_dir).unwrap_or(a).display()
            );
        }
    }
    bail!(
        "fuzzing found problems in: {}",
        failed
            .iter()
            .map(|o| o.target.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The targets: the file stems of `fuzz/fuzz_targets/*.rs`, sorted.
fn list_targets(fuzz_dir: &Path) -> anyhow::Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut targets: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "rs").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    targets.sort();
    if targets.is_empty() {
        bail!("no fuzz targets in {}", dir.display());
    }
    Ok(targets)
}

/// Installs the pinned nightly (the kernel crate's, see `setup`) and cargo-fuzz when missing.
fn ensure_tools() -> anyhow::Result<()> {
    let nightly = crate::setup::pinned_nightly()?;
    crate::setup::rust_src(&nightly)?;
    let cargo_fuzz = Command::new("cargo")
        .arg(format!("+{nightly}"))
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !cargo_fuzz {
        eprintln!("xtask fuzz: installing cargo-fuzz");
        sh(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// `cargo +nightly fuzz SUBCOMMAND --fuzz-dir FUZZ_DIR`, with the kernel build skipped: the
/// targets never load programs, so the `ollama-egress` build script need not run bpf-linker.
fn fuzz_command(root: &Path, subcommand: &str, fuzz_dir: &Path) -> Command {
    let nightly = crate::setup::pinned_nightly().unwrap_or_else(|_| "nightly".to_owned());
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .arg(format!("+{nightly}"))
        .args(["fuzz", subcommand, "--fuzz-dir"])
        .arg(fuzz_dir)
        .env("AYA_BUILD_SKIP", "1");
    cmd
}

/// A scratch `TMPDIR` for the targets (the log targets write a file per input): in
/// `/dev/shm` when there is one, else under `fuzz/target`.
fn scratch_dir(fuzz_dir: &Path) -> PathBuf {
    let name = format!("ollama-egress-fuzz-{}", std::process::id());
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.join(name)
    } else {
        fuzz_dir.join("target").join(name)
    }
}

fn run_target(
    root: &Path,
    fuzz_dir: &Path,
    scratch: &Path,
    target: &str,
    args: &Args,
) -> anyhow::Result<Outcome> {
    let work = fuzz_dir.join("target").join("corpus").join(target);
    let seeds = fuzz_dir.join("corpus").join(target);
    let artifacts_dir = fuzz_dir.join("artifacts").join(target);
    let logs = fuzz_dir.join("target").join("fuzz-logs");
    for d in [&work, &seeds, &artifacts_dir, &logs] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    fs::create_dir_all(scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let before = files_in(&artifacts_dir);
    let log = logs.join(format!("{target}.log"));
    let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;

    let mut cmd = fuzz_command(root, "run", fuzz_dir);
    cmd.arg(target)
        .arg(&work)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={}", args.seconds))
        .arg("-print_final_stats=1")
        // An input that runs this long is a hang, reported like a crash.
        .arg("-timeout=10");
    let dict = fuzz_dir.join("dict").join(format!("{target}.dict"));
    if dict.is_file() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    cmd.args(&args.libfuzzer_args)
        .env("TMPDIR", scratch)
        .stdout(out.try_clone().context("duplicating the log file")?)
        .stderr(out);
    eprintln!(
        "xtask fuzz: {target} for {} s (log: {})",
        args.seconds,
        log.display()
    );
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("running cargo fuzz run {target}"))?;
    let text = fs::read_to_string(&log).unwrap_or_default();
    let mut artifacts: Vec<PathBuf> = files_in(&artifacts_dir)
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    artifacts.sort();
    let stats = parse_stats(&text);
    eprintln!(
        "xtask fuzz: {target}: {} in {:.0} s",
        if status.success() && artifacts.is_empty() {
            "ok"
        } else {
            "FAILED"
        },
        start.elapsed().as_secs_f64()
    );
    Ok(Outcome {
        target: target.to_owned(),
        success: status.success() && artifacts.is_empty(),
        stats,
        artifacts,
        log,
    })
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default()
}

/// The numbers of libFuzzer's final statistics and its last status line.
fn parse_stats(log: &str) -> Stats {
    let stat = |key: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
    };
    let mut stats = Stats {
        runs: stat("stat::number_of_executed_units:"),
        exec_per_sec: stat("stat::average_exec_per_sec:"),
        new_units: stat("stat::new_units_added:"),
        ..Stats::default()
    };
    if let Some(status) = log.lines().rev().find(|l| l.contains(" cov: ")) {
        let field = |name: &str| {
            let mut words = status.split_whitespace();
            words.find(|w| *w == name)?;
            // `corp: 123/45Kb` → 123.
            words.next()?.split('/').next()?.parse().ok()
        };
        stats.cov = field("cov:");
        stats.features = field("ft:");
        stats.corpus = field("corp:");
    }
    stats
}

fn print_summary(outcomes: &[Outcome], seconds: u64) {
    let n = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    println!("\nfuzzing, {seconds} s per target:");
    println!(
        "{:<20} {:>12} {:>8} {:>7} {:>7} {:>7} {:>6}  result",
        "target", "runs", "exec/s", "cov", "ft", "corpus", "new"
    );
    for o in outcomes {
        let s = &o.stats;
        println!(
            "{:<20} {:>12} {:>8} {:>7} {:>7} {:>7} {:>6}  {}",
            o.target,
            n(s.runs),
            n(s.exec_per_sec),
            n(s.cov),
            n(s.features),
            n(s.corpus),
            n(s.new_units),
            if o.success {
                "ok".to_owned()
            } else if o.artifacts.is_empty() {
                format!("FAILED (see {})", o.log.display())
            } else {
                format!("CRASH: {}", o.artifacts[0].display())
            }
        );
    }
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests;
