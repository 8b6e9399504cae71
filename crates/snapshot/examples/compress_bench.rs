//! Compresses stdin to stdout with one method, for `bench/compress.sh` (which times it
//! like the external `gzip`/`pigz` it is compared with).
//!
//! Usage: `compress_bench METHOD < IN > OUT` with METHOD one of `kiln-gzip` (parallel,
//! all cores), `kiln-gzip-1t`, `kiln-zstd` (all cores), `kiln-zstd-1t`, `flate2-1t`
//! (plain single-stream flate2 GzEncoder, level 6). The kiln methods include computing
//! both sha256 digests, as a real layer write does; they print the digests to stderr.

use kiln_snapshot::{CompressWriter, Compression};
use std::io::{self, Read, Write};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(method) = std::env::args().nth(1) else {
        eprintln!(
            "usage: compress_bench kiln-gzip|kiln-gzip-1t|kiln-zstd|kiln-zstd-1t|flate2-1t < IN > OUT"
        );
        std::process::exit(2);
    };
    let mut input = io::BufReader::with_capacity(1 << 20, io::stdin().lock());
    let output = io::BufWriter::with_capacity(1 << 20, io::stdout().lock());
    if method == "flate2-1t" {
        let mut encoder = flate2::write::GzEncoder::new(output, flate2::Compression::new(6));
        io::copy(&mut input, &mut encoder)?;
        encoder.finish()?.flush()?;
        return Ok(());
    }
    let (compression, threads) = match method.as_str() {
        "kiln-gzip" => (Compression::GZIP_DEFAULT, 0),
        "kiln-gzip-1t" => (Compression::GZIP_DEFAULT, 1),
        "kiln-zstd" => (Compression::ZSTD_DEFAULT, 0),
        "kiln-zstd-1t" => (Compression::ZSTD_DEFAULT, 1),
        other => return Err(format!("unknown method {other}").into()),
    };
    let mut writer = if threads == 0 {
        CompressWriter::new(output, compression)?
    } else {
        CompressWriter::with_threads(output, compression, threads)?
    };
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = input.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        writer.write_all(&buffer[..read])?;
    }
    let (_, blob) = writer.finish()?;
    eprintln!("{method}: digest {} diff_id {}", blob.digest, blob.diff_id);
    Ok(())
}
