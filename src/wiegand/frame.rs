//! Frame assembly: timestamped edges on D0/D1 in, complete frames (or why they were refused) out.
//!
//! Lines idle high; a bit is a short low pulse (20–100 µs) on D0 for 0 or D1 for 1, bits 0.2–20 ms
//! apart, and a frame ends with silence (`frame_gap_ns`). A bit counts at its falling edge.
//! Anything odd rejects the whole frame: a misread card must never become someone else's card.
//!
//! Edge timestamps are CLOCK_MONOTONIC ns (the kernel's). Every edge comes with a reading of that
//! clock (`now_ns`); an edge stamped ahead of the clock, or before the edge before it, cannot be
//! real: it is discarded, the frame it would have joined is abandoned, and the decoder starts
//! afresh at the next plausible edge. So no input, however stamped, can hold a frame open past
//! the present and leave the door deaf to the cards that follow.

use super::Bits;
use super::MAX_BITS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WiegandLine {
    D0,
    D1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    /// High → low: a pulse starts (the bit).
    Falling,
    /// Low → high: the pulse ends.
    Rising,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub line: WiegandLine,
    pub kind: EdgeKind,
    /// CLOCK_MONOTONIC ns.
    pub timestamp_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Silence that ends a frame, ns (the standard allows up to 20 ms between bits).
    pub frame_gap_ns: u64,
    /// Falling edges closer than this are noise, not bits, ns.
    pub min_bit_interval_ns: u64,
    /// Longest frame accepted, bits (at most 128).
    pub max_bits: usize,
    /// How far an edge's stamp may lie ahead of the clock reading that comes with it, ns. The
    /// kernel stamps an edge before anyone can read it, so this only absorbs the order of two
    /// clock reads; anything further ahead is discarded.
    pub max_lead_ns: u64,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            frame_gap_ns: 30_000_000,
            min_bit_interval_ns: 200_000,
            max_bits: 64,
            max_lead_ns: 10_000_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub bits: Bits,
    /// CLOCK_MONOTONIC ns of the frame's first and last edge.
    pub first_edge_ns: u64,
    pub last_edge_ns: u64,
}

/// Why a frame was refused. `bits` is how many bits had arrived when it went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    PulseTooClose {
        bits: usize,
    },
    BothLinesLow {
        bits: usize,
    },
    TooManyBits {
        bits: usize,
    },
    /// An edge stamped before the edge before it: discarded, the frame abandoned.
    TimeWentBackwards {
        bits: usize,
    },
    /// An edge stamped ahead of the monotonic clock: discarded, the frame abandoned.
    EdgeFromTheFuture {
        bits: usize,
    },
    /// The kernel dropped edges (its event sequence numbers skipped) in or just before the
    /// frame: it cannot be trusted.
    EdgesLost {
        bits: usize,
    },
}

impl FrameError {
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::PulseTooClose { .. } => "pulse_too_close",
            FrameError::BothLinesLow { .. } => "both_lines_low",
            FrameError::TooManyBits { .. } => "too_many_bits",
            FrameError::TimeWentBackwards { .. } => "time_went_backwards",
            FrameError::EdgeFromTheFuture { .. } => "edge_from_the_future",
            FrameError::EdgesLost { .. } => "edges_lost",
        }
    }
}

pub type FrameOutcome = Result<Frame, FrameError>;

/// Assembles frames from edges. Pure: time only comes in with the edges, `push`'s clock reading
/// and `poll`.
#[derive(Debug, Clone)]
pub struct WiegandDecoder {
    config: DecoderConfig,
    bits: Bits,
    first_edge_ns: u64,
    last_edge_ns: Option<u64>,
    last_fall_ns: Option<u64>,
    low: [bool; 2],
    error: Option<FrameError>,
    /// Set after an implausible edge: further ones are dropped without another report until a
    /// plausible edge arrives, so a flood is reported once.
    discarding: bool,
    discarded: u64,
    /// Edges were lost before the next edge: the frame it belongs to is rejected.
    lost_before_next: bool,
}

impl WiegandDecoder {
    pub fn new(config: DecoderConfig) -> WiegandDecoder {
        WiegandDecoder {
            config: DecoderConfig {
                max_bits: config.max_bits.min(MAX_BITS),
                ..config
            },
            bits: Bits::new(),
            first_edge_ns: 0,
            last_edge_ns: None,
            last_fall_ns: None,
            low: [false; 2],
            error: None,
            discarding: false,
            discarded: 0,
            lost_before_next: false,
        }
    }

    /// The source lost edges (the kernel's event buffer overflowed) between the last edge fed
    /// and the next: the frame in progress and the frame of the next edge are rejected with
    /// `edges_lost`, since the missing edges may belong to either.
    pub fn edges_lost(&mut self) {
        if self.last_edge_ns.is_some() {
            self.fail(FrameError::EdgesLost {
                bits: self.bits.len(),
            });
        }
        self.lost_before_next = true;
    }

    /// Feeds one edge, with the monotonic clock read when it was received (`now_ns`). Returns
    /// the previous frame if this edge came after the frame gap, or an error when this edge's
    /// stamp is implausible (the edge is dropped and any open frame abandoned; a run of such
    /// edges is reported once).
    pub fn push(&mut self, edge: Edge, now_ns: u64) -> Option<FrameOutcome> {
        let bits = self.bits.len();
        let implausible = if edge.timestamp_ns > now_ns.saturating_add(self.config.max_lead_ns) {
            Some(FrameError::EdgeFromTheFuture { bits })
        } else if self.last_edge_ns.is_some_and(|last| edge.timestamp_ns < last) {
            Some(FrameError::TimeWentBackwards { bits })
        } else {
            None
        };
        if let Some(error) = implausible {
            self.discarded += 1;
            self.reset();
            let first_of_a_run = !self.discarding;
            self.discarding = true;
            return first_of_a_run.then_some(Err(error));
        }
        self.discarding = false;
        let finished = match self.last_edge_ns {
            Some(last) if edge.timestamp_ns - last >= self.config.frame_gap_ns => self.finish(),
            _ => None,
        };
        self.accept(edge);
        finished
    }

    /// Completes the current frame once `frame_gap` of silence has passed at `now_ns`.
    pub fn poll(&mut self, now_ns: u64) -> Option<FrameOutcome> {
        let last = self.last_edge_ns?;
        (now_ns.saturating_sub(last) >= self.config.frame_gap_ns)
            .then(|| self.finish())
            .flatten()
    }

    /// When `poll` should next be called, while a frame is open (CLOCK_MONOTONIC ns). Never
    /// later than `max_lead_ns` past the latest clock reading plus the frame gap, because no
    /// edge stamped further ahead is accepted.
    pub fn deadline_ns(&self) -> Option<u64> {
        self.last_edge_ns
            .map(|last| last.saturating_add(self.config.frame_gap_ns))
    }

    /// Edges discarded for implausible timestamps since the decoder started.
    pub fn discarded_edges(&self) -> u64 {
        self.discarded
    }

    fn accept(&mut self, edge: Edge) {
        let index = match edge.line {
            WiegandLine::D0 => 0,
            WiegandLine::D1 => 1,
        };
        if self.last_edge_ns.is_none() {
            self.first_edge_ns = edge.timestamp_ns;
        }
        if std::mem::take(&mut self.lost_before_next) {
            self.fail(FrameError::EdgesLost {
                bits: self.bits.len(),
            });
        }
        self.last_edge_ns = Some(edge.timestamp_ns);
        match edge.kind {
            EdgeKind::Rising => self.low[index] = false,
            EdgeKind::Falling => {
                let bits = self.bits.len();
                if self.low[1 - index] {
                    self.fail(FrameError::BothLinesLow { bits });
                }
                if self
                    .last_fall_ns
                    .is_some_and(|f| edge.timestamp_ns - f < self.config.min_bit_interval_ns)
                {
                    self.fail(FrameError::PulseTooClose { bits });
                }
                self.low[index] = true;
                self.last_fall_ns = Some(edge.timestamp_ns);
                if bits >= self.config.max_bits {
                    self.fail(FrameError::TooManyBits { bits: bits + 1 });
                } else if self.error.is_none() {
                    self.bits.push(index == 1);
                }
            }
        }
    }

    fn fail(&mut self, error: FrameError) {
        self.error.get_or_insert(error);
    }

    fn finish(&mut self) -> Option<FrameOutcome> {
        let last = self.last_edge_ns?;
        let outcome = match self.error {
            Some(error) => Some(Err(error)),
            // Only rising edges (a line settling): nothing was sent.
            None if self.bits.is_empty() => None,
            None => Some(Ok(Frame {
                bits: self.bits,
                first_edge_ns: self.first_edge_ns,
                last_edge_ns: last,
            })),
        };
        self.reset();
        outcome
    }

    fn reset(&mut self) {
        self.bits = Bits::new();
        self.last_edge_ns = None;
        self.last_fall_ns = None;
        self.low = [false; 2];
        self.error = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::mock::reader::{edges_for, PulseTiming};
    use proptest::prelude::*;

    /// A documented H10301 frame (Allegion 26A example: facility 101, card 4095).
    const CARD: &str = "00110010100001111111111111";
    const MS: u64 = 1_000_000;

    /// Edges, each with the clock reading it arrives with (`None`: its own stamp).
    type Clocked = Vec<(Edge, Option<u64>)>;

    fn card_edges(start_ns: u64) -> Vec<Edge> {
        edges_for(&Bits::from_str(CARD).unwrap(), start_ns, &PulseTiming::default())
    }

    fn falling(line: WiegandLine, timestamp_ns: u64) -> Edge {
        Edge {
            line,
            kind: EdgeKind::Falling,
            timestamp_ns,
        }
    }

    /// Feeds edges as a door task does: each with a clock reading (`now` per edge, or the edge's
    /// own stamp when `None`), then polls well after the last one.
    fn run(decoder: &mut WiegandDecoder, edges: &Clocked) -> Vec<FrameOutcome> {
        let mut out: Vec<FrameOutcome> = edges
            .iter()
            .filter_map(|(e, now)| decoder.push(*e, now.unwrap_or(e.timestamp_ns)))
            .collect();
        let latest_clock = edges
            .iter()
            .map(|(e, now)| now.unwrap_or(e.timestamp_ns))
            .max()
            .unwrap_or(0);
        out.extend(decoder.poll(latest_clock + 1_000 * MS));
        out
    }

    fn honest(edges: Vec<Edge>) -> Clocked {
        edges.into_iter().map(|e| (e, None)).collect()
    }

    #[test]
    fn lost_edges_reject_the_open_frame_and_the_next() {
        let first = card_edges(0);
        let (head, tail) = first.split_at(20);
        let mut decoder = WiegandDecoder::new(DecoderConfig::default());
        for edge in head {
            assert_eq!(decoder.push(*edge, edge.timestamp_ns), None);
        }
        decoder.edges_lost();
        let mut outcomes = run(&mut decoder, &honest(tail.to_vec()));
        // A whole, intact frame after the gap still decodes.
        outcomes.extend(run(&mut decoder, &honest(card_edges(5_000 * MS))));
        assert!(
            matches!(outcomes[0], Err(FrameError::EdgesLost { .. })),
            "{outcomes:?}"
        );
        assert_eq!(outcomes[0].unwrap_err().reason(), "edges_lost");
        assert!(decoded_card(&outcomes[1]), "{outcomes:?}");

        // Lost between frames: the next frame is the one rejected.
        let mut decoder = WiegandDecoder::new(DecoderConfig::default());
        decoder.edges_lost();
        let outcomes = run(&mut decoder, &honest(first));
        assert!(
            matches!(outcomes[..], [Err(FrameError::EdgesLost { bits: 0 })]),
            "{outcomes:?}"
        );
    }

    fn decoded_card(outcome: &FrameOutcome) -> bool {
        outcome.as_ref().is_ok_and(|f| f.bits.to_string() == CARD)
    }

    #[test]
    fn a_card_decodes_and_frames_end_by_push_or_poll() {
        let mut decoder = WiegandDecoder::new(DecoderConfig::default());
        let mut edges = card_edges(0);
        edges.extend(card_edges(200 * MS));
        let outcomes: Vec<_> = edges
            .iter()
            .filter_map(|e| decoder.push(*e, e.timestamp_ns))
            .collect();
        assert_eq!(
            outcomes.len(),
            1,
            "the second card's first edge closes the first frame"
        );
        let deadline = decoder.deadline_ns().unwrap();
        assert!(decoder.poll(deadline - 1).is_none());
        let last = decoder.poll(deadline).unwrap();
        assert!(decoded_card(&outcomes[0]) && decoded_card(&last));
        assert_eq!(decoder.deadline_ns(), None);
    }

    #[test]
    fn noise_rejects_the_frame() {
        let mut glitched = card_edges(0);
        glitched.insert(2, falling(WiegandLine::D1, 100_000)); // 100 µs after a real bit
        glitched.sort_by_key(|e| e.timestamp_ns);
        let both_low = vec![falling(WiegandLine::D0, 0), falling(WiegandLine::D1, MS)];
        let long = edges_for(&Bits::from_value(u128::MAX, 100), 0, &PulseTiming::default());
        for (edges, reason) in [
            (glitched, "pulse_too_close"),
            (both_low, "both_lines_low"),
            (long, "too_many_bits"),
        ] {
            let mut decoder = WiegandDecoder::new(DecoderConfig::default());
            let outcomes = run(&mut decoder, &honest(edges));
            assert_eq!(outcomes[0].unwrap_err().reason(), reason);
        }
    }

    /// The kind "implausible timestamps": for each hostile input, the outcome it must produce,
    /// and the documented card sent right after it (30 ms later by the clock) must still decode.
    #[test]
    fn no_timestamp_can_deafen_the_decoder() {
        let now = 1_000_000 * MS; // the monotonic clock, ~17 minutes after boot
        let far = now + 60_000 * MS; // the 600-digit PIN's last edges: a minute ahead
        let future_flood: Clocked = (0..10_000u64)
            .map(|i| (falling(WiegandLine::D0, far + i * 2 * MS), Some(now)))
            .collect();
        let mut future_frame = honest(card_edges(now - 60 * MS));
        future_frame.extend(card_edges(far).into_iter().map(|e| (e, Some(now))));
        let mut backwards = honest(card_edges(now - 100 * MS));
        backwards.insert(10, (falling(WiegandLine::D1, now - 500 * MS), None));
        let mut saturating = honest(card_edges(now - 100 * MS));
        saturating.push((falling(WiegandLine::D0, u64::MAX), Some(now)));
        let fast_flood: Clocked = (0..10_000u64)
            .map(|i| (falling(WiegandLine::D1, now - 200 * MS + i * 10_000), None))
            .collect();
        let slow_flood: Clocked = (0..500u64)
            .map(|i| (falling(WiegandLine::D1, now - 10_000 * MS + i * 15 * MS), None))
            .collect();
        let huge_gap = vec![
            (falling(WiegandLine::D0, 0), Some(0)),
            (falling(WiegandLine::D1, now - 100 * MS), None),
        ];
        let cases: Vec<(&str, Clocked, Vec<&str>)> = vec![
            (
                "edges a minute ahead of the clock",
                future_flood,
                vec!["edge_from_the_future"],
            ),
            // The card's frame was still open (not yet polled) when the bad edge came: abandoned,
            // as the whole frame is in doubt.
            (
                "an open frame, then an edge ahead",
                future_frame,
                vec!["edge_from_the_future"],
            ),
            // The card's remaining edges arrive as a fragment, which no format accepts.
            (
                "an edge stamped before its predecessor",
                backwards,
                vec!["time_went_backwards", "unsupported"],
            ),
            ("a stamp at u64::MAX", saturating, vec!["edge_from_the_future"]),
            ("10,000 edges 10 µs apart", fast_flood, vec!["pulse_too_close"]),
            ("500 bits 15 ms apart", slow_flood, vec!["too_many_bits"]),
            (
                "two lone bits 17 minutes apart",
                huge_gap,
                vec!["unsupported", "unsupported"],
            ),
        ];
        for (what, mut edges, expected) in cases {
            let mut decoder = WiegandDecoder::new(DecoderConfig::default());
            // The next card, 30 ms after the clock reading that came with the hostile input.
            let latest = edges
                .iter()
                .map(|(e, n)| n.unwrap_or(e.timestamp_ns).min(e.timestamp_ns))
                .max()
                .unwrap();
            let next = latest.max(now) + 30 * MS;
            edges.extend(honest(card_edges(next)));
            let outcomes = run(&mut decoder, &edges);
            let described: Vec<&str> = outcomes
                .iter()
                .map(|o| match o {
                    Ok(f) if f.bits.to_string() == CARD => "card",
                    Ok(_) => "unsupported",
                    Err(e) => e.reason(),
                })
                .collect();
            let mut want = expected.clone();
            want.push("card");
            assert_eq!(described, want, "{what}");
        }
    }

    #[test]
    fn a_run_of_implausible_edges_is_reported_once_and_counted() {
        let mut decoder = WiegandDecoder::new(DecoderConfig::default());
        let reports: Vec<_> = (0..100)
            .filter_map(|i| decoder.push(falling(WiegandLine::D0, 10_000 * MS + i * MS), 0))
            .collect();
        assert_eq!(reports.len(), 1);
        assert_eq!(decoder.discarded_edges(), 100);
        assert_eq!(decoder.deadline_ns(), None, "nothing is held open");
    }

    proptest! {
        /// Whatever the stamps and clock readings, the decoder never panics, never holds a frame
        /// open past the latest clock reading plus lead and gap, and frames stay within bounds.
        #[test]
        fn random_edges_never_panic_nor_hold_the_decoder(
            raw in proptest::collection::vec((any::<bool>(), any::<bool>(), 0u64..40_000_000, any::<u8>()), 0..300)
        ) {
            let config = DecoderConfig::default();
            let mut decoder = WiegandDecoder::new(config);
            let (mut t, mut now) = (1_000_000_000u64, 1_000_000_000u64);
            for (d1, fall, dt, skew) in raw {
                now += dt / 2;
                t = match skew % 8 {
                    0 => t.saturating_sub(dt),         // backwards
                    1 => now + 1_000_000_000,          // ahead of the clock
                    _ => t.max(now.saturating_sub(dt)), // plausible
                };
                let edge = Edge {
                    line: if d1 { WiegandLine::D1 } else { WiegandLine::D0 },
                    kind: if fall { EdgeKind::Falling } else { EdgeKind::Rising },
                    timestamp_ns: t,
                };
                if let Some(Ok(frame)) = decoder.push(edge, now) {
                    prop_assert!(!frame.bits.is_empty() && frame.bits.len() <= config.max_bits);
                }
                if let Some(deadline) = decoder.deadline_ns() {
                    prop_assert!(deadline <= now + config.max_lead_ns + config.frame_gap_ns);
                }
            }
        }
    }
}
