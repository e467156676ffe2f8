//! Parsers of the measuring tools' outputs, as `service logs` hands them
//! back: iperf3's `--json` client report and lab-echo's `rr` line. Any
//! input, however cut short, gives a typed error, never a panic.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error(
        "iperf3 output is not complete JSON ({reason}); the client was likely cut short: run it with a longer --duration or look at the task's logs"
    )]
    Iperf3Truncated { reason: String },
    #[error("iperf3 reported an error: {message}")]
    Iperf3Failed { message: String },
    #[error(
        "iperf3 JSON has no numeric `{field}`; is this iperf3 3.x run with --json as a client?"
    )]
    Iperf3Missing { field: &'static str },
    #[error(
        "no `rr N/s p50 Xus p99 Yus` line in lab-echo's output (got {got:?}); is the image's lab-echo this build's?"
    )]
    RrMissing { got: String },
    #[error("lab-echo rr line {line:?}: `{field}` is not a number")]
    RrField { line: String, field: &'static str },
}

/// iperf3's client totals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Iperf3 {
    /// `end.sum_received.bits_per_second`: what arrived, the honest figure
    /// (the sender's can include bytes still in flight).
    pub bits_per_second: f64,
    /// `end.sum_received.bytes`: what arrived in the whole run, to weigh
    /// the CPU it cost.
    pub bytes_received: f64,
    /// `end.sum_sent.retransmits` (0 where the kernel does not report them).
    pub retransmits: u64,
}

impl Iperf3 {
    /// One `iperf3 -c … --json` run's output. `"error"` wins over totals:
    /// iperf3 writes both when a run breaks midway.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let v: Value =
            serde_json::from_str(text.trim()).map_err(|e| ParseError::Iperf3Truncated {
                reason: e.to_string(),
            })?;
        if let Some(message) = v.get("error").and_then(Value::as_str) {
            return Err(ParseError::Iperf3Failed {
                message: message.to_owned(),
            });
        }
        let end = v.get("end");
        let bits_per_second = end
            .and_then(|e| e.get("sum_received"))
            .and_then(|s| s.get("bits_per_second"))
            .and_then(Value::as_f64)
            .ok_or(ParseError::Iperf3Missing {
                field: "end.sum_received.bits_per_second",
            })?;
        let bytes_received = end
            .and_then(|e| e.get("sum_received"))
            .and_then(|s| s.get("bytes"))
            .and_then(Value::as_f64)
            .ok_or(ParseError::Iperf3Missing {
                field: "end.sum_received.bytes",
            })?;
        let retransmits = end
            .and_then(|e| e.get("sum_sent"))
            .and_then(|s| s.get("retransmits"))
            .map_or(Some(0), Value::as_u64)
            .ok_or(ParseError::Iperf3Missing {
                field: "end.sum_sent.retransmits",
            })?;
        Ok(Self {
            bits_per_second,
            bytes_received,
            retransmits,
        })
    }
}

/// lab-echo's `rr N/s p50 Xus p99 Yus`: TCP_RR round trips per second and
/// their latency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rr {
    pub per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl Rr {
    /// The last `rr` line of `text` (other lines — logs prefixes stripped —
    /// are ignored).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let line = text
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with("rr "))
            .ok_or_else(|| ParseError::RrMissing {
                got: text.chars().take(200).collect(),
            })?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let field = |i: usize, suffix: &str, name: &'static str| -> Result<f64, ParseError> {
            words
                .get(i)
                .and_then(|w| w.strip_suffix(suffix))
                .and_then(|n| n.parse::<f64>().ok())
                .filter(|n| n.is_finite() && *n >= 0.0)
                .ok_or_else(|| ParseError::RrField {
                    line: line.to_owned(),
                    field: name,
                })
        };
        if words.get(2) != Some(&"p50") || words.get(4) != Some(&"p99") {
            return Err(ParseError::RrMissing {
                got: line.to_owned(),
            });
        }
        Ok(Self {
            per_second: field(1, "/s", "N/s")?,
            p50_us: field(3, "us", "p50")?,
            p99_us: field(5, "us", "p99")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const IPERF_OK: &str = r#"{
        "start": {"connected": [{"socket": 5}]},
        "intervals": [],
        "end": {
            "sum_sent": {"bytes": 100, "bits_per_second": 9.5e9, "retransmits": 12},
            "sum_received": {"bytes": 99, "bits_per_second": 9.4e9}
        }
    }"#;

    #[test]
    fn iperf3_totals() {
        let r = Iperf3::parse(IPERF_OK).expect("valid by construction");
        assert_eq!(r.bits_per_second, 9.4e9);
        assert_eq!(r.retransmits, 12);
        assert_eq!(r.bytes_received, 99.0);
    }

    #[test]
    fn iperf3_error_field_wins() {
        let text = r#"{"start": {}, "intervals": [], "end": {}, "error": "unable to connect to server: Connection refused"}"#;
        assert_eq!(
            Iperf3::parse(text),
            Err(ParseError::Iperf3Failed {
                message: "unable to connect to server: Connection refused".into()
            })
        );
    }

    #[test]
    fn iperf3_truncated_and_missing() {
        let cut = &IPERF_OK[..IPERF_OK.len() / 2];
        assert!(matches!(
            Iperf3::parse(cut),
            Err(ParseError::Iperf3Truncated { .. })
        ));
        assert_eq!(
            Iperf3::parse(r#"{"end": {}}"#),
            Err(ParseError::Iperf3Missing {
                field: "end.sum_received.bits_per_second"
            })
        );
        // A kernel without retransmit counts: iperf3 leaves the field out.
        let r = Iperf3::parse(r#"{"end": {"sum_received": {"bits_per_second": 1, "bytes": 1}}}"#)
            .expect("valid by construction");
        assert_eq!(r.retransmits, 0);
    }

    #[test]
    fn rr_line() {
        let r = Rr::parse("warming\nrr 15234.5/s p50 61.2us p99 140.0us\n")
            .expect("valid by construction");
        assert_eq!(
            r,
            Rr {
                per_second: 15234.5,
                p50_us: 61.2,
                p99_us: 140.0
            }
        );
        assert!(matches!(
            Rr::parse("Error: connect 10.0.0.2:7: refused"),
            Err(ParseError::RrMissing { .. })
        ));
        assert!(matches!(
            Rr::parse("rr 1x/s p50 1us p99 2us"),
            Err(ParseError::RrField { field: "N/s", .. })
        ));
        assert!(matches!(
            Rr::parse("rr 10/s p50 1us"),
            Err(ParseError::RrMissing { .. })
        ));
    }

    proptest! {
        #[test]
        fn iperf3_never_panics(s in ".*") {
            let _ = Iperf3::parse(&s);
        }

        #[test]
        fn iperf3_any_truncation_is_an_error(cut in 0usize..IPERF_OK.len()) {
            let text = IPERF_OK.get(..cut).unwrap_or("");
            prop_assert!(Iperf3::parse(text).is_err());
        }

        #[test]
        fn rr_never_panics(s in ".*") {
            let _ = Rr::parse(&s);
        }

        #[test]
        fn rr_truncations_never_panic(cut in 0usize..40) {
            let line = "rr 15234.5/s p50 61.2us p99 140.0us";
            let _ = Rr::parse(line.get(..cut).unwrap_or(""));
        }

        #[test]
        fn rr_round_trips(n in 0.0f64..1e7, p50 in 0.0f64..1e6, p99 in 0.0f64..1e6) {
            let line = format!("rr {n:.1}/s p50 {p50:.1}us p99 {p99:.1}us");
            let r = Rr::parse(&line).expect("valid by construction");
            prop_assert!((r.per_second - n).abs() < 0.051);
            prop_assert!((r.p99_us - p99).abs() < 0.051);
        }
    }
}
