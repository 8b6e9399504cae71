//! Build progress: the events the engine reports while it works, and a
//! renderer for BuildKit's `--progress=plain` format:
//!
//! ```text
//! #3 [builder 2/4] RUN make
//! #3 0.412 compiling...
//! #3 DONE 0.9s
//!
//! #4 [stage-1 2/2] COPY --from=builder /out /
//! #4 CACHED
//! ```

use std::io::Write;
use std::time::{Duration, Instant};

/// Receives what the build engine does, step by step. Step ids are handed
/// out by the sink (`#N` in plain output).
pub trait ProgressSink: Send {
    /// A vertex (a step, or an internal action like loading the context) starts.
    fn start(&mut self, name: &str) -> usize;
    /// Output of a RUN step, as it arrives.
    fn log(&mut self, id: usize, bytes: &[u8]);
    /// The step's result came from the cache.
    fn cached(&mut self, id: usize);
    /// The step finished.
    fn done(&mut self, id: usize, elapsed: Duration);
    /// The step failed with `message`.
    fn error(&mut self, id: usize, message: &str);
    /// A free-form line outside any step (the size report).
    fn note(&mut self, line: &str);
}

/// Discards everything (`--progress=quiet`, `-q`).
pub struct QuietProgress {
    next: usize,
}

impl QuietProgress {
    pub fn new() -> Self {
        QuietProgress { next: 0 }
    }
}

impl Default for QuietProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl ProgressSink for QuietProgress {
    fn start(&mut self, _name: &str) -> usize {
        self.next += 1;
        self.next
    }
    fn log(&mut self, _id: usize, _bytes: &[u8]) {}
    fn cached(&mut self, _id: usize) {}
    fn done(&mut self, _id: usize, _elapsed: Duration) {}
    fn error(&mut self, _id: usize, _message: &str) {}
    fn note(&mut self, _line: &str) {}
}

/// BuildKit's plain progress format on any writer (stderr for `kiln build`).
pub struct PlainProgress<W: Write + Send> {
    out: W,
    next: usize,
    /// When each open step started, for the relative timestamps of log lines.
    started: Vec<(usize, Instant)>,
    /// Bytes of a log line not yet terminated by a newline, per step.
    partial: Vec<(usize, Vec<u8>)>,
}

impl<W: Write + Send> PlainProgress<W> {
    pub fn new(out: W) -> Self {
        PlainProgress {
            out,
            next: 0,
            started: Vec::new(),
            partial: Vec::new(),
        }
    }

    /// The writer back (tests read what was printed).
    pub fn into_inner(self) -> W {
        self.out
    }

    fn elapsed(&self, id: usize) -> f64 {
        self.started
            .iter()
            .find(|(i, _)| *i == id)
            .map_or(0.0, |(_, t)| t.elapsed().as_secs_f64())
    }

    fn flush_partial(&mut self, id: usize) {
        if let Some(pos) = self.partial.iter().position(|(i, _)| *i == id) {
            let (_, rest) = self.partial.swap_remove(pos);
            if !rest.is_empty() {
                let at = self.elapsed(id);
                let _ = writeln!(self.out, "#{id} {at:.3} {}", String::from_utf8_lossy(&rest));
            }
        }
    }
}

impl<W: Write + Send> ProgressSink for PlainProgress<W> {
    fn start(&mut self, name: &str) -> usize {
        self.next += 1;
        let id = self.next;
        self.started.push((id, Instant::now()));
        let _ = writeln!(self.out, "#{id} {name}");
        id
    }

    fn log(&mut self, id: usize, bytes: &[u8]) {
        let at = self.elapsed(id);
        let pos = match self.partial.iter().position(|(i, _)| *i == id) {
            Some(pos) => pos,
            None => {
                self.partial.push((id, Vec::new()));
                self.partial.len() - 1
            }
        };
        let Some((_, buffer)) = self.partial.get_mut(pos) else {
            return;
        };
        buffer.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(newline) = buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=newline).collect();
            lines.push(line);
        }
        for line in lines {
            let text = String::from_utf8_lossy(&line);
            let _ = writeln!(self.out, "#{id} {at:.3} {}", text.trim_end_matches('\n'));
        }
    }

    fn cached(&mut self, id: usize) {
        let _ = writeln!(self.out, "#{id} CACHED\n");
    }

    fn done(&mut self, id: usize, elapsed: Duration) {
        self.flush_partial(id);
        let _ = writeln!(self.out, "#{id} DONE {:.1}s\n", elapsed.as_secs_f64());
    }

    fn error(&mut self, id: usize, message: &str) {
        self.flush_partial(id);
        let _ = writeln!(self.out, "#{id} ERROR: {message}\n");
    }

    fn note(&mut self, line: &str) {
        let _ = writeln!(self.out, "{line}");
    }
}

/// One JSON object per line (`--progress=rawjson`):
/// `{"vertex":N,"event":"start","name":"[1/2] RUN ...","elapsed":0.0}`, then
/// `log` (with `data`), `cached`, `done` (with `elapsed` seconds), `error`
/// (with `message`) events for the same vertex; `note` lines have no vertex.
pub struct JsonProgress<W: Write + Send> {
    out: W,
    next: usize,
    started: Instant,
}

impl<W: Write + Send> JsonProgress<W> {
    pub fn new(out: W) -> Self {
        JsonProgress {
            out,
            next: 0,
            started: Instant::now(),
        }
    }

    /// The writer back (tests read what was printed).
    pub fn into_inner(self) -> W {
        self.out
    }

    fn emit(&mut self, mut event: serde_json::Map<String, serde_json::Value>) {
        event.insert(
            "time".into(),
            serde_json::json!(self.started.elapsed().as_secs_f64()),
        );
        let _ = writeln!(self.out, "{}", serde_json::Value::Object(event));
    }

    fn vertex_event(
        &mut self,
        id: usize,
        kind: &str,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut event = serde_json::Map::new();
        event.insert("vertex".into(), serde_json::json!(id));
        event.insert("event".into(), serde_json::json!(kind));
        event
    }
}

impl<W: Write + Send> ProgressSink for JsonProgress<W> {
    fn start(&mut self, name: &str) -> usize {
        self.next += 1;
        let id = self.next;
        let mut event = self.vertex_event(id, "start");
        event.insert("name".into(), serde_json::json!(name));
        self.emit(event);
        id
    }

    fn log(&mut self, id: usize, bytes: &[u8]) {
        let mut event = self.vertex_event(id, "log");
        event.insert(
            "data".into(),
            serde_json::json!(String::from_utf8_lossy(bytes)),
        );
        self.emit(event);
    }

    fn cached(&mut self, id: usize) {
        let event = self.vertex_event(id, "cached");
        self.emit(event);
    }

    fn done(&mut self, id: usize, elapsed: Duration) {
        let mut event = self.vertex_event(id, "done");
        event.insert("elapsed".into(), serde_json::json!(elapsed.as_secs_f64()));
        self.emit(event);
    }

    fn error(&mut self, id: usize, message: &str) {
        let mut event = self.vertex_event(id, "error");
        event.insert("message".into(), serde_json::json!(message));
        self.emit(event);
    }

    fn note(&mut self, line: &str) {
        let mut event = serde_json::Map::new();
        event.insert("event".into(), serde_json::json!("note"));
        event.insert("message".into(), serde_json::json!(line));
        self.emit(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_look_like_buildkit() {
        let mut progress = PlainProgress::new(Vec::new());
        let id = progress.start("[2/3] RUN echo hi");
        progress.log(id, b"hel");
        progress.log(id, b"lo\nwor");
        progress.done(id, Duration::from_millis(340));
        let cached = progress.start("[3/3] COPY a /b");
        progress.cached(cached);
        let text = String::from_utf8(progress.into_inner()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.first(), Some(&"#1 [2/3] RUN echo hi"));
        assert!(
            lines
                .get(1)
                .is_some_and(|l| l.starts_with("#1 0.") && l.ends_with(" hello")),
            "{text}"
        );
        assert!(lines.get(2).is_some_and(|l| l.ends_with(" wor")), "{text}");
        assert_eq!(lines.get(3), Some(&"#1 DONE 0.3s"));
        assert!(text.contains("#2 [3/3] COPY a /b\n#2 CACHED\n"), "{text}");
    }

    #[test]
    fn rawjson_is_one_event_per_line() {
        let mut progress = JsonProgress::new(Vec::new());
        let id = progress.start("[2/2] RUN echo hi");
        progress.log(id, b"hi\n");
        progress.done(id, Duration::from_millis(5));
        let text = String::from_utf8(progress.into_inner()).unwrap_or_default();
        let events: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or(serde_json::Value::Null))
            .collect();
        assert_eq!(events.len(), 3, "{text}");
        assert_eq!(events[0]["event"], "start");
        assert_eq!(events[0]["name"], "[2/2] RUN echo hi");
        assert_eq!(events[1]["data"], "hi\n");
        assert_eq!(events[2]["event"], "done");
        assert_eq!(events[2]["vertex"], 1);
    }
}
