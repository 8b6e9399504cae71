//! Container logs in docker's json-file format: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"2026-01-02T03:04:05.123456789Z"}`.
//! Output is split at newlines; a partial line is written when its stream
//! ends (docker does the same).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One log record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub log: String,
    pub stream: String,
    pub time: String,
}

/// Appends output to a json-file log, line by line.
pub struct LogWriter {
    file: File,
    partial_stdout: Vec<u8>,
    partial_stderr: Vec<u8>,
}

impl LogWriter {
    pub fn create(path: &Path) -> io::Result<LogWriter> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(LogWriter {
            file,
            partial_stdout: Vec::new(),
            partial_stderr: Vec::new(),
        })
    }

    /// Records `bytes` of `stream` ("stdout" or "stderr"): every complete line now.
    pub fn write(&mut self, stream: &str, bytes: &[u8]) -> io::Result<()> {
        let mut pending = std::mem::take(self.partial(stream));
        pending.extend_from_slice(bytes);
        let mut start = 0;
        let mut out = Vec::new();
        while let Some(pos) = pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos + 1;
            encode(&mut out, stream, &pending[start..end])?;
            start = end;
        }
        pending.drain(..start);
        *self.partial(stream) = pending;
        if !out.is_empty() {
            self.file.write_all(&out)?;
        }
        Ok(())
    }

    /// Writes any partial lines (the stream ended without a newline).
    pub fn flush_partial(&mut self) -> io::Result<()> {
        let mut out = Vec::new();
        for stream in ["stdout", "stderr"] {
            let pending = std::mem::take(self.partial(stream));
            if !pending.is_empty() {
                encode(&mut out, stream, &pending)?;
            }
        }
        self.file.write_all(&out)
    }

    fn partial(&mut self, stream: &str) -> &mut Vec<u8> {
        if stream == "stderr" {
            &mut self.partial_stderr
        } else {
            &mut self.partial_stdout
        }
    }
}

fn encode(out: &mut Vec<u8>, stream: &str, line: &[u8]) -> io::Result<()> {
    let entry = LogEntry {
        log: String::from_utf8_lossy(line).into_owned(),
        stream: stream.to_string(),
        time: crate::container::timestamp().0,
    };
    serde_json::to_writer(&mut *out, &entry).map_err(io::Error::other)?;
    out.push(b'\n');
    Ok(())
}

/// Reads log entries from `reader`, skipping lines that are not valid records
/// (a torn last line while the monitor is writing).
pub fn read_entries(reader: impl io::Read) -> Vec<LogEntry> {
    BufReader::new(reader)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str(&line).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_and_partial_flushed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("log");
        let mut writer = LogWriter::create(&path).expect("create");
        writer.write("stdout", b"hel").expect("write");
        writer.write("stderr", b"oops\n").expect("write");
        writer.write("stdout", b"lo\nwor").expect("write");
        writer.write("stdout", b"ld").expect("write");
        writer.flush_partial().expect("flush");
        let entries = read_entries(File::open(&path).expect("open"));
        let got: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e.stream.as_str(), e.log.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("stderr", "oops\n"),
                ("stdout", "hello\n"),
                ("stdout", "world")
            ]
        );
        assert!(entries[0].time.ends_with('Z'));
    }
}
