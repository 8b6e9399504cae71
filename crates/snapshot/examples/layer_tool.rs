//! Small command-line front end to the crate, for benchmarks and for comparing kiln's
//! layers with other tools by hand.
//!
//! `layer_tool create SRC_DIR OUT_FILE [none|gzip|zstd] [dir|upper]`: writes a layer.
//! `layer_tool apply LAYER_FILE TARGET_DIR [flatten|overlay]`: applies a layer.
//! Both print the digests, sizes and the time taken.

use kiln_snapshot::{
    ApplyMode, ApplyOptions, Compression, CreateOptions, DiffKind, apply_layer,
    create_layer_compressed,
};
use std::path::Path;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let started = Instant::now();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["create", source, out, rest @ ..] => {
            let compression = match rest.first().copied().unwrap_or("gzip") {
                "none" => Compression::None,
                "gzip" => Compression::GZIP_DEFAULT,
                "zstd" => Compression::ZSTD_DEFAULT,
                other => return Err(format!("unknown compression {other}").into()),
            };
            let kind = match rest.get(1).copied().unwrap_or("dir") {
                "dir" => DiffKind::Directory,
                "upper" => DiffKind::OverlayUpper,
                other => return Err(format!("unknown kind {other}").into()),
            };
            let file = std::io::BufWriter::new(std::fs::File::create(out)?);
            let (stats, blob) = create_layer_compressed(
                Path::new(source),
                kind,
                compression,
                file,
                &CreateOptions::from_env(),
            )?;
            println!(
                "created {out}: {} entries, tar {} bytes, blob {} bytes in {:.2}s",
                stats.entries,
                stats.size,
                blob.size,
                started.elapsed().as_secs_f64()
            );
            println!("diff_id {}\ndigest  {}", stats.diff_id, blob.digest);
        }
        ["apply", layer, target, rest @ ..] => {
            let mode = match rest.first().copied().unwrap_or("flatten") {
                "flatten" => ApplyMode::Flatten,
                "overlay" => ApplyMode::Overlay,
                other => return Err(format!("unknown mode {other}").into()),
            };
            let file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(layer)?);
            let stats = apply_layer(
                file,
                Path::new(target),
                &ApplyOptions {
                    mode,
                    ..ApplyOptions::default()
                },
            )?;
            println!(
                "applied {layer} ({:?}): {} entries, {} file bytes in {:.2}s",
                stats.format,
                stats.entries,
                stats.file_bytes,
                started.elapsed().as_secs_f64()
            );
            println!("diff_id {}", stats.diff_id);
        }
        _ => {
            eprintln!(
                "usage: layer_tool create SRC OUT [none|gzip|zstd] [dir|upper]\n       layer_tool apply LAYER TARGET [flatten|overlay]"
            );
            std::process::exit(2);
        }
    }
    Ok(())
}
