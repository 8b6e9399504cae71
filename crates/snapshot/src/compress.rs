//! Layer compression: gzip (parallel, pigz-style), zstd (multi-threaded) or none, with the
//! compressed digest (the blob digest) and the uncompressed digest (the diff_id) computed
//! in the same single pass; and streaming decompression that sniffs the format.
//!
//! Parallel gzip: the input is cut into blocks that worker threads deflate independently,
//! each primed with the last 32 KiB of the block before it as a preset dictionary (so the
//! ratio stays close to single-threaded gzip) and ended with a sync flush, which leaves the
//! output byte-aligned so the raw deflate blocks can be concatenated into one ordinary
//! single-member gzip stream. The CRC-32 of the whole input is combined from per-block CRCs.

use crate::digest::{Digest, HashingWriter};
use flate2::{Compress, FlushCompress, Status};
use sha2::{Digest as _, Sha256};
use std::collections::VecDeque;
use std::io::{self, Cursor, Read, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How to compress a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip at `level` 0..=9 (docker's default is 6).
    Gzip {
        /// 0 (store) to 9 (best).
        level: u32,
    },
    /// zstd at `level` 1..=22 (3 is zstd's default).
    Zstd {
        /// 1 (fast) to 22 (best).
        level: i32,
    },
}

impl Compression {
    /// gzip at docker's default level.
    pub const GZIP_DEFAULT: Compression = Compression::Gzip { level: 6 };
    /// zstd at its default level.
    pub const ZSTD_DEFAULT: Compression = Compression::Zstd { level: 3 };
}

/// Why a compression name could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown compression {input:?}: use none, gzip, gzip:LEVEL (0-9), zstd or zstd:LEVEL (1-22)"
)]
pub struct CompressionParseError {
    /// The rejected input.
    pub input: String,
}

impl std::str::FromStr for Compression {
    type Err = CompressionParseError;

    /// Parses `none` (or `uncompressed`), `gzip`, `gzip:LEVEL`, `zstd`, `zstd:LEVEL`, the
    /// spelling of a `--compression` flag.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = || CompressionParseError {
            input: input.to_string(),
        };
        let (name, level) = match input.split_once(':') {
            Some((name, level)) => (name, Some(level)),
            None => (input, None),
        };
        match (name.to_ascii_lowercase().as_str(), level) {
            ("none" | "uncompressed", None) => Ok(Compression::None),
            ("gzip", None) => Ok(Compression::GZIP_DEFAULT),
            ("zstd", None) => Ok(Compression::ZSTD_DEFAULT),
            ("gzip", Some(level)) => match level.parse::<u32>() {
                Ok(level) if level <= 9 => Ok(Compression::Gzip { level }),
                _ => Err(error()),
            },
            ("zstd", Some(level)) => match level.parse::<i32>() {
                Ok(level) if (1..=22).contains(&level) => Ok(Compression::Zstd { level }),
                _ => Err(error()),
            },
            _ => Err(error()),
        }
    }
}

/// The compression format of a stream, as found by [`sniff`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// No known compression magic: treated as a plain tar.
    Uncompressed,
    /// gzip magic `1f 8b`.
    Gzip,
    /// zstd frame magic `28 b5 2f fd`.
    Zstd,
}

/// Finds the compression format from the first bytes of a stream.
pub fn sniff(head: &[u8]) -> Format {
    match head {
        [0x1f, 0x8b, ..] => Format::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Format::Zstd,
        _ => Format::Uncompressed,
    }
}

/// The result of compressing a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressedBlob {
    /// sha256 of the compressed bytes: the blob digest in a manifest.
    pub digest: Digest,
    /// Size of the compressed bytes.
    pub size: u64,
    /// sha256 of the uncompressed bytes: the diff_id in an image config.
    pub diff_id: Digest,
    /// Size of the uncompressed bytes.
    pub uncompressed_size: u64,
}

/// Errors from compressing or decompressing.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    /// Reading the input or writing the output failed.
    #[error("compressing layer: I/O error: {0}")]
    Io(#[from] io::Error),
    /// The deflate engine reported an error (a bug or memory exhaustion).
    #[error("gzip compression failed: {0}; this is a bug in kiln or out of memory")]
    Deflate(String),
    /// A gzip worker thread died.
    #[error("a gzip worker thread stopped unexpectedly; retry, and report it if it repeats")]
    WorkerLost,
    /// The level is out of range for the format.
    #[error("invalid compression level {level} for {format}: use {range}")]
    InvalidLevel {
        /// The requested level.
        level: i64,
        /// gzip or zstd.
        format: &'static str,
        /// The valid range.
        range: &'static str,
    },
}

/// Compresses `input` into `out`, returning both digests and sizes.
///
/// Uses every available core for gzip and zstd.
pub fn compress(
    mut input: impl Read,
    compression: Compression,
    out: impl Write,
) -> Result<CompressedBlob, CompressError> {
    let mut writer = CompressWriter::new(out, compression)?;
    io::copy(&mut input, &mut writer)?;
    let (_, blob) = writer.finish()?;
    Ok(blob)
}

enum Encoder<W: Write> {
    /// Uncompressed: the blob digest is the diff_id, so the output is not hashed again.
    None(W),
    Gzip(Box<ParallelGzipEncoder<HashingWriter<W>>>),
    Zstd(zstd::stream::write::Encoder<'static, HashingWriter<W>>),
}

/// A writer that compresses what is written to it into `W` and computes both digests.
/// Call [`CompressWriter::finish`] at the end; dropping it without finishing leaves a
/// truncated stream.
pub struct CompressWriter<W: Write> {
    encoder: Encoder<W>,
    uncompressed: Sha256,
    uncompressed_size: u64,
}

/// Number of threads to use for compression.
fn compression_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl<W: Write> CompressWriter<W> {
    /// Starts a compressed stream into `out`.
    pub fn new(out: W, compression: Compression) -> Result<Self, CompressError> {
        Self::with_threads(out, compression, compression_threads())
    }

    /// Like [`CompressWriter::new`] with an explicit thread count (1 = no worker threads).
    pub fn with_threads(
        out: W,
        compression: Compression,
        threads: usize,
    ) -> Result<Self, CompressError> {
        let encoder = match compression {
            Compression::None => Encoder::None(out),
            Compression::Gzip { level } => {
                if level > 9 {
                    return Err(CompressError::InvalidLevel {
                        level: i64::from(level),
                        format: "gzip",
                        range: "0..=9",
                    });
                }
                Encoder::Gzip(Box::new(ParallelGzipEncoder::new(
                    HashingWriter::new(out),
                    level,
                    threads,
                )?))
            }
            Compression::Zstd { level } => {
                if !(1..=22).contains(&level) {
                    return Err(CompressError::InvalidLevel {
                        level: i64::from(level),
                        format: "zstd",
                        range: "1..=22",
                    });
                }
                let mut encoder =
                    zstd::stream::write::Encoder::new(HashingWriter::new(out), level)?;
                if threads > 1 {
                    encoder.multithread(threads as u32)?;
                }
                Encoder::Zstd(encoder)
            }
        };
        Ok(CompressWriter {
            encoder,
            uncompressed: Sha256::new(),
            uncompressed_size: 0,
        })
    }

    /// Ends the stream and returns the output writer and the digests.
    pub fn finish(self) -> Result<(W, CompressedBlob), CompressError> {
        let diff_id = Digest::from_sha256(self.uncompressed);
        let (mut out, digest, size) = match self.encoder {
            Encoder::None(out) => (out, diff_id.clone(), self.uncompressed_size),
            Encoder::Gzip(e) => e.finish()?.finish(),
            Encoder::Zstd(e) => e.finish()?.finish(),
        };
        out.flush()?;
        let blob = CompressedBlob {
            digest,
            size,
            diff_id,
            uncompressed_size: self.uncompressed_size,
        };
        Ok((out, blob))
    }
}

impl<W: Write> Write for CompressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = match &mut self.encoder {
            Encoder::None(w) => w.write(buf)?,
            Encoder::Gzip(e) => e.write(buf)?,
            Encoder::Zstd(e) => e.write(buf)?,
        };
        if let Some(part) = buf.get(..written) {
            self.uncompressed.update(part);
        }
        self.uncompressed_size += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing mid-stream would cost ratio for gzip; only the output writer is flushed.
        match &mut self.encoder {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(_) => Ok(()),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// Input block size for parallel gzip: big enough that per-block overhead (sync flush
/// marker, dictionary priming, thread hand-off) is negligible, small enough to keep all
/// workers busy on small layers.
const GZIP_BLOCK_SIZE: usize = 1024 * 1024;
/// Deflate's window: the preset dictionary carried from one block to the next.
const DEFLATE_WINDOW: usize = 32 * 1024;

struct GzipJob {
    data: Arc<Vec<u8>>,
    dictionary: Vec<u8>,
    is_last: bool,
    reply: SyncSender<Result<DeflatedBlock, String>>,
}

struct DeflatedBlock {
    deflated: Vec<u8>,
    crc: crc32fast::Hasher,
}

/// pigz-style gzip writer: one gzip member whose deflate stream is produced block by block
/// on worker threads.
struct ParallelGzipEncoder<W: Write> {
    out: W,
    level: u32,
    pending_input: Vec<u8>,
    previous_tail: Vec<u8>,
    in_flight: VecDeque<Receiver<Result<DeflatedBlock, String>>>,
    max_in_flight: usize,
    jobs: Option<SyncSender<GzipJob>>,
    workers: Vec<JoinHandle<()>>,
    crc: crc32fast::Hasher,
    total_in: u64,
    /// The engine used when there are no worker threads.
    inline_deflater: Option<Compress>,
}

/// Deflates one block with a raw-deflate engine that is reset and reused across blocks
/// (allocating its tables for every block would cost more than the dictionary priming).
fn deflate_block(
    deflater: &mut Compress,
    data: &[u8],
    dictionary: &[u8],
    is_last: bool,
) -> Result<DeflatedBlock, String> {
    deflater.reset();
    if !dictionary.is_empty() {
        deflater
            .set_dictionary(dictionary)
            .map_err(|e| e.to_string())?;
    }
    let flush = if is_last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut deflated = Vec::with_capacity(data.len() / 2 + 1024);
    loop {
        if deflated.capacity() - deflated.len() < 1024 {
            deflated.reserve(deflated.capacity().max(64 * 1024));
        }
        let consumed = usize::try_from(deflater.total_in()).map_err(|e| e.to_string())?;
        let rest = data.get(consumed..).unwrap_or(&[]);
        let status = deflater
            .compress_vec(rest, &mut deflated, flush)
            .map_err(|e| e.to_string())?;
        let all_consumed = deflater.total_in() as usize == data.len();
        let done = match status {
            Status::StreamEnd => true,
            // A sync flush is complete when all input is consumed and the engine did not
            // fill the output buffer (it had nothing more to emit).
            Status::Ok | Status::BufError => {
                !is_last && all_consumed && deflated.len() < deflated.capacity()
            }
        };
        if done {
            break;
        }
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(data);
    Ok(DeflatedBlock { deflated, crc })
}

impl<W: Write> ParallelGzipEncoder<W> {
    fn new(mut out: W, level: u32, threads: usize) -> io::Result<Self> {
        // Fixed header: no name, mtime 0 (reproducible), XFL by level, OS = unix.
        let extra_flags = match level {
            9 => 2,
            0 | 1 => 4,
            _ => 0,
        };
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, extra_flags, 3])?;
        let mut encoder = ParallelGzipEncoder {
            out,
            level,
            pending_input: Vec::with_capacity(GZIP_BLOCK_SIZE),
            previous_tail: Vec::new(),
            in_flight: VecDeque::new(),
            max_in_flight: threads.max(1) * 2,
            jobs: None,
            workers: Vec::new(),
            crc: crc32fast::Hasher::new(),
            total_in: 0,
            inline_deflater: None,
        };
        if threads > 1 {
            let (job_sender, job_receiver) = mpsc::sync_channel::<GzipJob>(threads * 2);
            let job_receiver = Arc::new(Mutex::new(job_receiver));
            for _ in 0..threads {
                let queue = Arc::clone(&job_receiver);
                encoder.workers.push(std::thread::spawn(move || {
                    let mut deflater = Compress::new(flate2::Compression::new(level), false);
                    loop {
                        let job = match queue.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let result =
                            deflate_block(&mut deflater, &job.data, &job.dictionary, job.is_last);
                        // The encoder may have been dropped after an error; nothing to do then.
                        let _ = job.reply.send(result);
                    }
                }));
            }
            encoder.jobs = Some(job_sender);
        }
        Ok(encoder)
    }

    fn write_block(&mut self, block: DeflatedBlock) -> io::Result<()> {
        self.out.write_all(&block.deflated)?;
        self.crc.combine(&block.crc);
        Ok(())
    }

    fn collect_oldest(&mut self) -> io::Result<()> {
        if let Some(receiver) = self.in_flight.pop_front() {
            let block = receiver
                .recv()
                .map_err(|_| io::Error::other("gzip worker thread stopped unexpectedly"))?
                .map_err(|e| io::Error::other(format!("gzip compression failed: {e}")))?;
            self.write_block(block)?;
        }
        Ok(())
    }

    fn submit_block(&mut self, is_last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.pending_input, Vec::with_capacity(GZIP_BLOCK_SIZE));
        self.total_in += data.len() as u64;
        let dictionary = std::mem::take(&mut self.previous_tail);
        let tail_start = data.len().saturating_sub(DEFLATE_WINDOW);
        self.previous_tail = data.get(tail_start..).unwrap_or(&[]).to_vec();
        match self.jobs.clone() {
            Some(jobs) => {
                while self.in_flight.len() >= self.max_in_flight {
                    self.collect_oldest()?;
                }
                let (reply, receiver) = mpsc::sync_channel(1);
                let job = GzipJob {
                    data: Arc::new(data),
                    dictionary,
                    is_last,
                    reply,
                };
                jobs.send(job)
                    .map_err(|_| io::Error::other("gzip worker threads stopped unexpectedly"))?;
                self.in_flight.push_back(receiver);
            }
            None => {
                let level = self.level;
                let deflater = self
                    .inline_deflater
                    .get_or_insert_with(|| Compress::new(flate2::Compression::new(level), false));
                let block = deflate_block(deflater, &data, &dictionary, is_last)
                    .map_err(|e| io::Error::other(format!("gzip compression failed: {e}")))?;
                self.write_block(block)?;
            }
        }
        Ok(())
    }

    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let total = buf.len();
        while !buf.is_empty() {
            let room = GZIP_BLOCK_SIZE - self.pending_input.len();
            let (now, later) = buf.split_at(room.min(buf.len()));
            self.pending_input.extend_from_slice(now);
            buf = later;
            if self.pending_input.len() == GZIP_BLOCK_SIZE {
                self.submit_block(false)?;
            }
        }
        Ok(total)
    }

    fn finish(mut self) -> io::Result<W> {
        self.submit_block(true)?;
        while !self.in_flight.is_empty() {
            self.collect_oldest()?;
        }
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        // ISIZE is the input size modulo 2^32 by definition.
        self.out.write_all(&(self.total_in as u32).to_le_bytes())?;
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        Ok(self.out)
    }
}

/// Returns a reader of the uncompressed stream, sniffing gzip (single- or multi-member),
/// zstd or no compression from the magic bytes.
pub fn decompress<'a>(mut reader: impl Read + Send + 'a) -> io::Result<Box<dyn Read + Send + 'a>> {
    let mut magic = [0u8; 4];
    let mut filled = 0;
    while filled < magic.len() {
        let read = match reader.read(&mut magic[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if read == 0 {
            break;
        }
        filled += read;
    }
    let head = magic.get(..filled).unwrap_or(&[]).to_vec();
    let format = sniff(&head);
    let whole = io::BufReader::with_capacity(256 * 1024, Cursor::new(head).chain(reader));
    Ok(match format {
        Format::Uncompressed => Box::new(whole),
        Format::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(whole)),
        Format::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(whole)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_data(len: usize) -> Vec<u8> {
        // Compressible but not trivial: words with a pseudo-random walk.
        let words = [
            b"layer ".as_slice(),
            b"kiln ",
            b"tar ",
            b"gzip\n",
            b"0123456789 ",
        ];
        let mut state = 0x2545_f491_u32;
        let mut data = Vec::with_capacity(len);
        while data.len() < len {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            data.extend_from_slice(words[(state % 5) as usize]);
            data.push((state >> 24) as u8);
        }
        data.truncate(len);
        data
    }

    fn round_trip(compression: Compression, threads: usize, len: usize) {
        let data = sample_data(len);
        let mut compressed = Vec::new();
        let mut writer = CompressWriter::with_threads(&mut compressed, compression, threads)
            .expect("valid level");
        writer.write_all(&data).expect("write to memory");
        let (_, blob) = writer.finish().expect("finish");
        assert_eq!(blob.diff_id, Digest::of_bytes(&data));
        assert_eq!(blob.uncompressed_size, len as u64);
        assert_eq!(blob.digest, Digest::of_bytes(&compressed));
        assert_eq!(blob.size, compressed.len() as u64);
        let mut decompressed = Vec::new();
        decompress(compressed.as_slice())
            .expect("sniff")
            .read_to_end(&mut decompressed)
            .expect("valid stream");
        assert!(
            decompressed == data,
            "round trip changed the data ({compression:?}, {threads} threads, {len} bytes)"
        );
    }

    #[test]
    fn gzip_round_trips_across_block_boundaries() {
        for len in [
            0,
            1,
            GZIP_BLOCK_SIZE - 1,
            GZIP_BLOCK_SIZE,
            3 * GZIP_BLOCK_SIZE + 17,
        ] {
            round_trip(Compression::GZIP_DEFAULT, 2, len);
            round_trip(Compression::GZIP_DEFAULT, 1, len);
        }
        round_trip(Compression::Gzip { level: 0 }, 2, 2 * GZIP_BLOCK_SIZE + 5);
        round_trip(Compression::Gzip { level: 9 }, 3, 2 * GZIP_BLOCK_SIZE + 5);
    }

    #[test]
    fn parallel_gzip_is_one_member_and_identical_to_single_threaded() {
        let data = sample_data(5 * GZIP_BLOCK_SIZE / 2);
        let mut outputs = Vec::new();
        for threads in [1, 2, 4] {
            let mut out = Vec::new();
            compress_with_threads(&data, threads, &mut out);
            outputs.push(out);
        }
        assert!(
            outputs.windows(2).all(|w| w[0] == w[1]),
            "output depends on thread count"
        );
        // A single-member decoder must read it all: proves one member, not several.
        let mut single_member = flate2::read::GzDecoder::new(outputs[0].as_slice());
        let mut decompressed = Vec::new();
        single_member
            .read_to_end(&mut decompressed)
            .expect("valid gzip");
        assert!(decompressed == data);
    }

    fn compress_with_threads(data: &[u8], threads: usize, out: &mut Vec<u8>) {
        let mut writer = CompressWriter::with_threads(out, Compression::GZIP_DEFAULT, threads)
            .expect("valid level");
        writer.write_all(data).expect("write");
        writer.finish().expect("finish");
    }

    #[test]
    fn zstd_and_none_round_trip() {
        round_trip(Compression::ZSTD_DEFAULT, 2, 1_000_000);
        round_trip(Compression::ZSTD_DEFAULT, 1, 0);
        round_trip(Compression::None, 1, 12345);
    }

    #[test]
    fn invalid_levels_are_refused() {
        let err = CompressWriter::new(Vec::new(), Compression::Gzip { level: 12 }).err();
        assert!(matches!(
            err,
            Some(CompressError::InvalidLevel { level: 12, .. })
        ));
        let err = CompressWriter::new(Vec::new(), Compression::Zstd { level: 0 }).err();
        assert!(matches!(
            err,
            Some(CompressError::InvalidLevel { level: 0, .. })
        ));
    }

    #[test]
    fn compression_names_parse() {
        assert_eq!(
            "gzip".parse::<Compression>().ok(),
            Some(Compression::GZIP_DEFAULT)
        );
        assert_eq!(
            "zstd:19".parse::<Compression>().ok(),
            Some(Compression::Zstd { level: 19 })
        );
        assert_eq!(
            "gzip:1".parse::<Compression>().ok(),
            Some(Compression::Gzip { level: 1 })
        );
        assert_eq!("none".parse::<Compression>().ok(), Some(Compression::None));
        for bad in ["gzip:10", "zstd:0", "brotli", "gzip:", ""] {
            let error = bad.parse::<Compression>().expect_err(bad);
            assert!(error.to_string().contains("gzip:LEVEL"), "{error}");
        }
    }

    #[test]
    fn concatenated_members_and_frames_decompress_fully() {
        let first = b"first member ".repeat(1000);
        let second = b"second member".repeat(1000);
        for compression in [Compression::GZIP_DEFAULT, Compression::ZSTD_DEFAULT] {
            let mut joined = Vec::new();
            for part in [&first, &second] {
                let mut writer =
                    CompressWriter::with_threads(&mut joined, compression, 1).expect("level");
                writer.write_all(part).expect("write");
                writer.finish().expect("finish");
            }
            let mut decompressed = Vec::new();
            decompress(joined.as_slice())
                .expect("sniff")
                .read_to_end(&mut decompressed)
                .expect("read");
            assert!(
                decompressed == [first.clone(), second.clone()].concat(),
                "{compression:?}"
            );
        }
    }

    #[test]
    fn sniff_recognises_formats() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8]), Format::Gzip);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Format::Zstd);
        assert_eq!(sniff(b"usta"), Format::Uncompressed);
        assert_eq!(sniff(&[]), Format::Uncompressed);
    }

    #[test]
    fn ratio_is_close_to_single_stream_gzip() {
        let data = sample_data(4 * GZIP_BLOCK_SIZE);
        let mut parallel = Vec::new();
        compress_with_threads(&data, 2, &mut parallel);
        let mut reference = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        reference.write_all(&data).expect("write");
        let reference = reference.finish().expect("finish");
        // Dictionary priming keeps the loss to the per-block flush markers.
        assert!(
            parallel.len() <= reference.len() + reference.len() / 50 + 64,
            "parallel {} vs single {}",
            parallel.len(),
            reference.len()
        );
    }
}
