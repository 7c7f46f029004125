//! Prints the manifests of a table: content, sequence numbers, first entries.
#![allow(clippy::unwrap_used)] // a developer tool: any failure should stop it loudly
use floe_engine::catalog::{SqlTableCatalog, TableCatalog};
use floe_engine::config::PipelineConfig;
use floe_engine::runtime::IoRuntime;
use iceberg::{NamespaceIdent, TableIdent};
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let config = PipelineConfig::load(std::path::Path::new(&args[1])).unwrap();
    let rt = IoRuntime::new(1).unwrap();
    let cat = rt.block_on(SqlTableCatalog::open(&config.catalog)).unwrap();
    let (ns, name) = args[2].split_once('.').unwrap();
    let table = rt.block_on(cat.table(&TableIdent::new(NamespaceIdent::new(ns.into()), name.into()))).unwrap();
    let md = table.metadata();
    let snap = md.current_snapshot().unwrap();
    println!("current snapshot {} seq {}", snap.snapshot_id(), snap.sequence_number());
    let list = rt.block_on(table.manifest_list_reader(snap).load()).unwrap();
    for m in list.entries() {
        println!(
            "manifest {:?} seq {} min {} added_snapshot {}",
            m.content, m.sequence_number, m.min_sequence_number, m.added_snapshot_id
        );
        let manifest = rt.block_on(m.load_manifest(table.file_io())).unwrap();
        for e in manifest.entries().iter().take(2) {
            println!(
                "   entry status {:?} seq {:?} file_seq {:?} content {:?} partition {:?} eq {:?}",
                e.status(),
                e.sequence_number(),
                e.file_sequence_number,
                e.content_type(),
                e.data_file().partition(),
                e.data_file().equality_ids()
            );
        }
    }
}
