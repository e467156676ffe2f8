//! The pure half of `shoal bench`: statistics over repeated samples, parsers
//! of the measuring tools' outputs, the JSON result schema, and docs/bench.md
//! rendered from result files ([`markdown`], [`manifest`]). No I/O here
//! beyond reading the local machine's description ([`meta`]), so every
//! piece is testable without a cluster.

#![forbid(unsafe_code)]

pub mod compare;
pub mod cpustat;
pub mod hist;
pub mod http;
pub mod manifest;
pub mod markdown;
pub mod meta;
pub mod netstat;
pub mod parse;
pub mod plot;
pub mod ratio;
pub mod result;
pub mod stats;

pub use compare::{Change, CompareError, compare};
pub use hist::{HistError, Histogram};
pub use parse::{Iperf3, ParseError, Rr};
pub use result::{BenchResult, Latency, Metric, RunMeta, ScenarioResult};
pub use stats::{Summary, percentile, summarize};
