//! Per-column dictionary choice for the Parquet files floe writes.
//!
//! parquet-rs dictionary-encodes every column until the dictionary page overflows; parquet-mr
//! (Spark's writer) drops the dictionary of a column whose first page would not shrink with it.
//! A table written the first way is larger and costs its readers more (mostly-distinct keys,
//! amounts and timestamps become a dictionary page plus 16-bit indices that zstd then fails
//! to compress). This module makes the same choice before the file is opened, from a sample of
//! the rows it will hold.
//!
//! Invariants:
//! - The choice never changes what a reader decodes, only how the pages are encoded.
//! - A column is written without a dictionary only if, on the sample, plain values would be
//!   smaller than dictionary + indices (parquet-mr's `isCompressionSatisfying` test). Columns the
//!   estimate does not cover (nested, boolean) keep parquet-rs's default.
//! - The sample is the first [`SAMPLE_ROWS`] rows; the cost is linear in it, not in the file.

use std::collections::HashSet;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::file::properties::WriterPropertiesBuilder;
use parquet::schema::types::ColumnPath;

/// Rows looked at per column.
pub const SAMPLE_ROWS: usize = 8192;

/// Whether `column`'s first [`SAMPLE_ROWS`] values are smaller dictionary-encoded; `None`
/// when the estimate does not apply (too few values, nested or boolean type).
pub fn dictionary_pays(column: &dyn Array) -> Option<bool> {
    let n = column.len().min(SAMPLE_ROWS);
    if n < 64 {
        return None;
    }
    let sample = column.slice(0, n);
    let data = sample.to_data();
    // The sample's non-null values as bytes, and what each costs plain beyond its bytes
    // (the 4-byte length of a variable-width value).
    let (values, prefix): (Vec<&[u8]>, usize) = match sample.data_type() {
        DataType::Utf8 => (sample.as_string::<i32>().iter().flatten().map(str::as_bytes).collect(), 4),
        DataType::LargeUtf8 => (sample.as_string::<i64>().iter().flatten().map(str::as_bytes).collect(), 4),
        DataType::Binary => (sample.as_binary::<i32>().iter().flatten().collect(), 4),
        DataType::Boolean => return None,
        t => {
            let width = t.primitive_width()?;
            let buffer = data.buffers().first()?;
            let bytes = &buffer.as_slice()[data.offset() * width..(data.offset() + n) * width];
            let valid = bytes.chunks_exact(width).enumerate().filter(|(i, _)| sample.is_valid(*i));
            (valid.map(|(_, v)| v).collect(), 0)
        }
    };
    let present = values.len();
    let raw: usize = values.iter().map(|v| v.len() + prefix).sum();
    let distinct: HashSet<&[u8]> = values.into_iter().collect();
    if present < 64 {
        return None;
    }
    let dictionary: usize = distinct.iter().map(|v| v.len()).sum();
    let bits = usize::BITS - distinct.len().saturating_sub(1).leading_zeros();
    let indices = (present * bits.max(1) as usize).div_ceil(8);
    Some(dictionary + indices < raw)
}

/// `builder` with the dictionary switched off for every top-level column of `batch` whose
/// sample would not shrink with one.
pub fn choose_dictionaries(mut builder: WriterPropertiesBuilder, batch: &RecordBatch) -> WriterPropertiesBuilder {
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if dictionary_pays(column.as_ref()) == Some(false) {
            builder = builder.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
        }
    }
    builder
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use arrow_schema::{Field, Schema};
    use parquet::file::properties::WriterProperties;

    use super::*;

    #[test]
    fn distinct_numbers_go_plain_repeated_values_keep_the_dictionary() {
        let ids = Int64Array::from_iter_values(0..10_000);
        assert_eq!(dictionary_pays(&ids), Some(false));
        let amounts = Float64Array::from_iter_values((0..10_000).map(|i| i as f64 * 1.37));
        assert_eq!(dictionary_pays(&amounts), Some(false));
        let statuses = StringArray::from_iter_values((0..10_000).map(|i| ["active", "closed", "frozen"][i % 3]));
        assert_eq!(dictionary_pays(&statuses), Some(true));
        let small = Int64Array::from_iter_values((0..10_000).map(|i| i % 50));
        assert_eq!(dictionary_pays(&small), Some(true));
    }

    #[test]
    fn nulls_and_short_columns_are_left_to_the_default() {
        assert_eq!(dictionary_pays(&Int64Array::from_iter_values(0..10)), None);
        let nulls = Int64Array::from(vec![None::<i64>; 1000]);
        assert_eq!(dictionary_pays(&nulls), None);
        let sliced = Int64Array::from_iter_values(0..20_000).slice(10_000, 5_000);
        assert_eq!(dictionary_pays(&sliced), Some(false));
    }

    #[test]
    fn the_builder_names_the_plain_columns() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("status", DataType::Utf8, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(0..1000)),
            Arc::new(StringArray::from_iter_values((0..1000).map(|i| if i % 2 == 0 { "a" } else { "b" }))),
        ];
        let batch = RecordBatch::try_new(schema, columns).expect("batch");
        let props: WriterProperties = choose_dictionaries(WriterProperties::builder(), &batch).build();
        assert!(!props.dictionary_enabled(&ColumnPath::from("id")));
        assert!(props.dictionary_enabled(&ColumnPath::from("status")));
    }
}
