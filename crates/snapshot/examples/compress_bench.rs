//! Compression throughput of one input file with one method, for `bench/compress.sh`.
//!
//! Usage: `compress_bench METHOD FILE` with METHOD one of `kiln-gzip` (parallel, all
//! cores), `kiln-gzip-1t`, `kiln-zstd` (all cores), `kiln-zstd-1t`, `flate2-1t` (plain
//! single-stream flate2 GzEncoder, level 6). Prints `METHOD seconds MB/s ratio bytes`.
//! The kiln methods include computing both sha256 digests, as a real layer write does.

use kiln_snapshot::{CompressWriter, Compression};
use std::io::{self, Read, Write};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(method), Some(path)) = (args.next(), args.next()) else {
        eprintln!(
            "usage: compress_bench kiln-gzip|kiln-gzip-1t|kiln-zstd|kiln-zstd-1t|flate2-1t FILE"
        );
        std::process::exit(2);
    };
    let mut input = io::BufReader::with_capacity(1 << 20, std::fs::File::open(&path)?);
    let mut counter = CountingSink(0);
    let started = Instant::now();
    let input_bytes = match method.as_str() {
        "flate2-1t" => {
            let mut encoder =
                flate2::write::GzEncoder::new(&mut counter, flate2::Compression::new(6));
            let copied = io::copy(&mut input, &mut encoder)?;
            encoder.finish()?;
            copied
        }
        kiln => {
            let (compression, threads) = match kiln {
                "kiln-gzip" => (Compression::GZIP_DEFAULT, 0),
                "kiln-gzip-1t" => (Compression::GZIP_DEFAULT, 1),
                "kiln-zstd" => (Compression::ZSTD_DEFAULT, 0),
                "kiln-zstd-1t" => (Compression::ZSTD_DEFAULT, 1),
                other => return Err(format!("unknown method {other}").into()),
            };
            let mut writer = if threads == 0 {
                CompressWriter::new(&mut counter, compression)?
            } else {
                CompressWriter::with_threads(&mut counter, compression, threads)?
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
            blob.uncompressed_size
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let output_bytes = counter.0;
    println!(
        "{method:<14} {seconds:8.2}s {:8.1} MB/s  ratio {:.3}  {output_bytes} bytes",
        input_bytes as f64 / 1e6 / seconds,
        output_bytes as f64 / input_bytes.max(1) as f64
    );
    Ok(())
}

struct CountingSink(u64);

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
