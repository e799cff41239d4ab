//! The run's bounded log: `output.log` lines plus captured stdout and stderr.
//!
//! Logs are output (a log line can leak a patient's record as well as a table
//! can), so they share one byte budget and are held by the host like any
//! other output. Exceeding the budget traps the guest with
//! [`RunError::LogLimit`].

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use serde::Serialize;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use crate::error::RunError;

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// `output.log` at debug level.
    Debug,
    /// `output.log` at info level.
    Info,
    /// `output.log` at warn level.
    Warn,
    /// `output.log` at error level.
    Error,
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr.
    Stderr,
}

/// One captured log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Where it came from.
    pub source: LogSource,
    /// The text (lossily decoded UTF-8 for stdio).
    pub message: String,
}

#[derive(Debug, Default)]
struct Inner {
    lines: Vec<LogLine>,
    used: u64,
    /// Partial stdio lines not yet terminated by a newline.
    pending_stdout: Vec<u8>,
    pending_stderr: Vec<u8>,
}

/// A log shared by `output.log` and the WASI stdio streams of one run.
#[derive(Debug, Clone)]
pub struct LogBuffer {
    limit: u64,
    inner: Arc<Mutex<Inner>>,
}

impl LogBuffer {
    /// A log with the given byte budget.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            inner: Arc::default(),
        }
    }

    /// Append a line; fails once the budget is exhausted.
    pub fn line(&self, source: LogSource, message: String) -> Result<(), RunError> {
        let mut inner = self.inner.lock().expect("log lock is never poisoned");
        self.charge(&mut inner, message.len() as u64)?;
        inner.lines.push(LogLine { source, message });
        Ok(())
    }

    fn charge(&self, inner: &mut Inner, bytes: u64) -> Result<(), RunError> {
        if inner.used + bytes > self.limit {
            return Err(RunError::LogLimit(self.limit));
        }
        inner.used += bytes;
        Ok(())
    }

    /// Append what a guest wrote to stdout or stderr, split into lines (a partial line waits
    /// for its end); fails once the budget is exhausted.
    pub fn stdio(&self, source: LogSource, bytes: &[u8]) -> Result<(), RunError> {
        let mut inner = self.inner.lock().expect("log lock is never poisoned");
        self.charge(&mut inner, bytes.len() as u64)?;
        let inner = &mut *inner;
        let pending = match source {
            LogSource::Stderr => &mut inner.pending_stderr,
            _ => &mut inner.pending_stdout,
        };
        pending.extend_from_slice(bytes);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            let message = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            inner.lines.push(LogLine { source, message });
        }
        Ok(())
    }

    /// Take the captured lines, flushing unterminated stdio lines.
    pub fn finish(&self) -> Vec<LogLine> {
        let mut inner = self.inner.lock().expect("log lock is never poisoned");
        let inner = &mut *inner;
        for (source, pending) in [
            (LogSource::Stdout, &mut inner.pending_stdout),
            (LogSource::Stderr, &mut inner.pending_stderr),
        ] {
            if !pending.is_empty() {
                let message = String::from_utf8_lossy(pending).into_owned();
                pending.clear();
                inner.lines.push(LogLine { source, message });
            }
        }
        std::mem::take(&mut inner.lines)
    }

    /// A WASI stdout/stderr stream writing into this log.
    pub(crate) fn stream(&self, source: LogSource) -> LogStream {
        LogStream {
            log: self.clone(),
            source,
        }
    }
}

/// The guest's stdout or stderr, captured into a [`LogBuffer`].
#[derive(Debug, Clone)]
pub(crate) struct LogStream {
    log: LogBuffer,
    source: LogSource,
}

/// Largest single write the stream accepts; WASI guests chunk to this.
const WRITE_PERMIT: usize = 64 * 1024;

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.log
            .stdio(self.source, &bytes)
            .map_err(|e| StreamError::Trap(wasmtime::Error::new(e)))
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always grant a permit: a write past the budget traps with a typed
        // error instead of a closed stream the guest might silently ignore.
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(
            self.log
                .stdio(self.source, buf)
                .map(|()| buf.len())
                .map_err(std::io::Error::other),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdio_is_split_into_lines_and_budgeted() {
        let log = LogBuffer::new(12);
        log.stdio(LogSource::Stdout, b"ab\ncd").unwrap();
        log.stdio(LogSource::Stdout, b"e\n").unwrap();
        assert!(matches!(
            log.stdio(LogSource::Stderr, b"123456"),
            Err(RunError::LogLimit(12))
        ));
        let lines = log.finish();
        let texts: Vec<_> = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(texts, ["ab", "cde"]);
    }
}
