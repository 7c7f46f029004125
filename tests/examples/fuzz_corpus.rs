//! Writes the seed corpus of the cargo-fuzz targets (`operators/fuzz`): the generator's
//! records, bad ones included, framed for the decoder target, and their `kcat -J` lines for
//! the replay line target.
//!
//! ```sh
//! cargo run --release -p floe-tests --example fuzz_corpus -- operators/fuzz/corpus [records] [seed]
//! ```

use std::path::PathBuf;

use floe_harness::fuzz_input::{DecoderInput, frame};
use floe_harness::kcat::kcat_line;
use floe_harness::{Generator, WorkloadSpec};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "operators/fuzz/corpus".into()));
    let records: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(300);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut spec = WorkloadSpec::standard(seed, records);
    spec.p_bad = 0.05;
    spec.p_no_before = 0.2;
    let tables = spec.tables.clone();
    let (decoder, lines) = (dir.join("decoder"), dir.join("replay_line"));
    std::fs::create_dir_all(&decoder)?;
    std::fs::create_dir_all(&lines)?;
    let mut written = 0;
    for (i, r) in Generator::new(spec).enumerate() {
        let table = tables.iter().position(|t| t.topic == r.topic).unwrap_or(0);
        let input = DecoderInput {
            table,
            key: r.key.clone().map(String::into_bytes),
            value: r.value.clone().map(String::into_bytes),
            split: i % 3 == 0,
        };
        std::fs::write(decoder.join(format!("r{i:05}")), frame(&input))?;
        std::fs::write(lines.join(format!("r{i:05}")), kcat_line(&r))?;
        written += 1;
    }
    println!("{written} decoder inputs and {written} replay lines in {}", dir.display());
    Ok(())
}
