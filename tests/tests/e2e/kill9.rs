//! Fault tests: the `floe` process killed at any moment (SIGKILL) and restarted ends with
//! exactly the tables an uninterrupted run makes.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use floe_harness::WorkloadSpec;
use floe_tests::{Scratch, kill_at_random_moments, pipeline_toml, seed};
use rand::{Rng, SeedableRng};

const FLOE: &str = env!("CARGO_BIN_EXE_floe-under-test");

fn floe(scratch: &Scratch, faults: Option<&str>) -> Command {
    let mut c = Command::new(FLOE);
    c.arg("run").arg(scratch.pipeline()).stdout(Stdio::null()).stderr(Stdio::piped()).env("RUST_LOG", "error");
    if let Some(f) = faults {
        c.env("FLOE_FAULTS", f);
    }
    c
}

fn run_to_completion(scratch: &Scratch) {
    let out = floe(scratch, None).output().expect("spawn floe");
    assert!(
        out.status.success(),
        "seed {}: recovery run failed: {}",
        scratch.seed,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn parquet_files(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            parquet_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "parquet") {
            out.insert(p.display().to_string());
        }
    }
}

/// Data files on disk that no table's current snapshot references.
fn orphans(scratch: &Scratch) -> usize {
    let mut on_disk = BTreeSet::new();
    parquet_files(&scratch.path().join("warehouse"), &mut on_disk);
    let referenced = scratch.referenced_files();
    on_disk.difference(&referenced).count()
}

#[test]
fn sigkill_at_random_moments_converges_to_the_model() {
    let s = seed();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(s);
    let scratch = Scratch::new(WorkloadSpec::standard(s, 60_000), &pipeline_toml(300, 2));
    // Kill at random moments until 20 kills landed while floe was running.
    let kills = kill_at_random_moments(
        20,
        Duration::from_secs(240),
        || Duration::from_millis(rng.random_range(10..400)),
        || floe(&scratch, None).spawn().expect("spawn floe"),
    );
    assert!(kills >= 20, "seed {s}: only {kills} kills landed");
    run_to_completion(&scratch);
    scratch.assert_tables_equal_model();
    // Exactly the commits of an uninterrupted run: the epochs are derived from offsets.
    let clean = Scratch::new(WorkloadSpec::standard(s, 60_000), &pipeline_toml(300, 2));
    clean.run();
    assert_eq!(
        scratch.snapshot_counts(),
        clean.snapshot_counts(),
        "seed {s}: a restart re-committed or skipped an epoch"
    );
}

#[test]
fn crashes_between_files_and_commit_and_inside_a_commit_recover_exactly() {
    let s = seed();
    let scratch = Scratch::new(WorkloadSpec::standard(s, 12_000), &pipeline_toml(250, 2));
    let clean = Scratch::new(WorkloadSpec::standard(s, 12_000), &pipeline_toml(250, 2));
    clean.run();
    for (point, n) in
        [("files-written", 5), ("commit-before-swap", 3), ("commit-after-swap", 4), ("commit-after-swap", 9)]
    {
        let out = floe(&scratch, Some(&format!("{point}:{n}"))).output().expect("spawn floe");
        assert!(!out.status.success(), "seed {s}: floe should have crashed at {point}:{n}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(point),
            "seed {s}: crashed elsewhere: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if point == "files-written" {
            assert!(orphans(&scratch) > 0, "seed {s}: the crash left written but uncommitted files");
        }
    }
    run_to_completion(&scratch);
    scratch.assert_tables_equal_model();
    assert_eq!(
        scratch.snapshot_counts(),
        clean.snapshot_counts(),
        "seed {s}: a lost commit response led to a second commit"
    );
}
